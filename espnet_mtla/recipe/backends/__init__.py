"""The job runners, standalone scripts run by path (also on cluster nodes): ``run_jobs.py``
(Kaldi's run.pl: N jobs on this machine) and ``queue_jobs.py`` (slurm.pl / queue.pl: one
``sbatch`` per job, or one ``qsub`` array per stage, each job running ``run_jobs.py`` on its
node), with ``queue_conf.py`` (Kaldi's conf/queue.conf: the SGE cell's names for the options)."""
