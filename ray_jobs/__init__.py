"""The Ray jobs, one file each: ``python -m ray_jobs.<job>`` locally or under ``ray job submit``.
Everything they share lives in the ``raykd`` library."""
