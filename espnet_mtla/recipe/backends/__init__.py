"""The job runners, standalone scripts run by path (also on cluster nodes): ``run_jobs.py``
(Kaldi's run.pl: N jobs on this machine) and ``queue_jobs.py`` (slurm.pl / queue.pl: one
``sbatch``/``qsub`` per job, each running ``run_jobs.py`` on its node)."""
