"""raykd: the library every Ray job (``ray_jobs/``), the Tune sweep (``tuning/``) and the Serve app
(``serving/``) share — typed config, data, models, losses, the training loop, the teacher cache,
scoring, the built-in assets, the CLI and the shared stage entrypoint."""
