"""A run folder on disk: ``run.json`` (``record``), ``pruned.pt`` and check inputs (``storage``), and the
pruned model rebuilt from them without running untrusted code (``rebuild``). Never imports a job."""
