"""``raykd recommend``: fine-tune, distil, both, or only prompt? Rules as data (``rules``), the run's
measurements they weigh (``evidence``), and the answer as text or JSON (``answer``). The command and
its pilot run are ``ray_jobs.recommend``."""
