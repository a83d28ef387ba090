"""The two prune jobs: ``prune(config)`` (``pipeline``) picks one-shot (``oneshot``) or the iterative search
(``search/``); both start from one shared setup (``setup``) and end by writing a verified run folder
(``finish``)."""
