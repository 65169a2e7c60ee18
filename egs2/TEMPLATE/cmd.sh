# Where the pipeline's jobs run (ESPnet's cmd.sh; every recipe links this file: replace the link
# with your own copy to change it for one recipe). Options given to run.sh win over these.
#   cmd         stages 3 (audio formatting) and 6 (statistics)
#   train_cmd   stage 7 (training); default: $cmd
#   decode_cmd  stage 8 (decoding); default: $cmd
# Each is "local" (this machine, parallel jobs), "slurm [options]" (sbatch) or "sge [options]"
# (qsub), options: --mem 4G --gpu 1 --time 4:00:00 --partition NAME --cpus N --max-jobs-run M.
# Kaldi's names work too: run.pl (local), slurm.pl (slurm), queue.pl (sge). sge turns the
# options into qsub's through --config FILE, else conf/queue.conf if the recipe has one (Kaldi's
# format), else -l mem_free, -l gpu, -l h_rt, -q and -pe smp.
cmd="local"
# train_cmd="slurm --gpu 1 --mem 16G --time 24:00:00"
# decode_cmd="slurm --mem 8G --time 4:00:00"
# train_cmd="sge --gpu 1 --mem 16G --time 24:00:00"
# decode_cmd="queue.pl --mem 8G --num_threads 2"
