"""One rank of a CPU DDP training run (gloo) under ``srun -n N``: our asr_train with ESPnet's
distributed options taken from Slurm's task variables; at the end each rank saves the weights
it holds (``<output_dir>/rank<r>.final.pth``), so that a test can compare the ranks.

    srun -n 2 python test/ddp_rank.py PORT <asr_train options>
"""

import os
import sys

import torch


def main() -> None:
    import espnet_mtla.tasks.registration  # noqa: F401  (registers our classes before ESPnet's parser is built)
    from espnet2.train.trainer import Trainer

    from espnet_mtla.cli.training import run_training

    rank, world = int(os.environ["SLURM_PROCID"]), int(os.environ["SLURM_NTASKS"])
    run = Trainer.run.__func__

    def run_and_save(cls, model, *args, **kwargs):
        result = run(cls, model, *args, **kwargs)
        options = kwargs.get("trainer_options") or args[6]
        torch.save(model.state_dict(), os.path.join(str(options.output_dir), f"rank{rank}.final.pth"))
        return result

    Trainer.run = classmethod(run_and_save)
    port, options = sys.argv[1], sys.argv[2:]
    run_training("asr", options + [
        "--dist_backend", "gloo", "--multiprocessing_distributed", "false", "--dist_world_size", str(world),
        "--dist_rank", str(rank), "--local_rank", os.environ.get("SLURM_LOCALID", str(rank)),
        "--dist_init_method", f"tcp://127.0.0.1:{port}"])


if __name__ == "__main__":
    main()
