"""The iterative search (METHOD.md §2–4): the round loop (``loop``), what every round shares (``context``),
what one round removes (``planner``), the threshold controller (``policy``), the resumable run folder
(``store``) and the delivery of the chosen round (``delivery``)."""
