"""Kaldi's ``conf/queue.conf``: how queue_jobs.py's options become qsub options on an SGE cell.

Each cell names its resources its own way (``mem_free`` or ``h_vmem``, a ``gpu`` complex or a
GPU queue, the parallel environment ``smp`` or another), so the mapping is a file, in Kaldi's
format, given with ``sge --config FILE``; without one, ``conf/queue.conf`` is read if the
recipe has it (as Kaldi's queue.pl does), else ``DEFAULT`` below::

    command qsub -V -cwd -S /bin/bash -j y     # qsub and the options every job gets
    option mem=* -l mem_free=$0                # --mem 4G -> -l mem_free=4G ($0: the value)
    option mem=0                               # --mem 0 -> nothing (a rule for a value wins over *)
    option num_threads=* -pe smp $0            # --cpus N (Kaldi's --num_threads N)
    option gpu=* -l gpu=$0 -q g.q
    default gpu=0                              # the value when the option is not given

The options are ``mem``, ``gpu``, ``time``, ``partition``, ``num_threads`` (``cpus`` is the same)
and ``max_jobs_run``. Lines for options queue_jobs.py does not have are accepted and unused, so
a Kaldi recipe's file works as it is. queue_jobs.py adds ``-sync y``, ``-N``, ``-o`` and ``-t``
itself (it waits on each array job and reads the tasks' exit codes from qsub).
"""

import shlex
from pathlib import Path
from typing import Dict, List, Optional

# Kaldi's default less what a stock cell lacks: no ram_free (a CLSP complex: qsub refuses jobs that
# ask for an unknown resource) and no -l arch=*64*; -V rather than -v PATH, so that the job runs
# in the submitting environment (its virtualenv, OMP_NUM_THREADS), as Slurm's jobs do.
DEFAULT = """\
command qsub -V -cwd -S /bin/bash -j y
option mem=* -l mem_free=$0
option mem=0
option num_threads=* -pe smp $0
option gpu=* -l gpu=$0
option gpu=0
option time=* -l h_rt=$0
option partition=* -q $0
option max_jobs_run=* -tc $0
"""
KALDI_PATH = Path("conf") / "queue.conf"
SAME = {"cpus": "num_threads"}  # our option name -> Kaldi's


class QueueConfError(ValueError):
    """A malformed file, or an option it has no rule for (the message is one line)."""


def option_name(name: str) -> str:
    name = name.replace("-", "_")
    return SAME.get(name, name)


class QueueConf:
    def __init__(self, text: str, source: str):
        self.source = source
        self.command: List[str] = []
        self.rules: Dict[str, Dict[str, List[str]]] = {}  # option -> value ("*": any) -> qsub arguments
        self.defaults: Dict[str, str] = {}
        for number, line in enumerate(text.splitlines(), 1):
            where = f"{source}:{number}"
            try:
                words = shlex.split(line, comments=True)
            except ValueError as err:
                raise QueueConfError(f"{where}: {err}") from None
            if not words:
                continue
            kind, rest = words[0], words[1:]
            if kind == "command" and rest:
                self.command = rest
            elif kind in ("option", "default") and rest and "=" in rest[0]:
                name, value = rest[0].split("=", 1)
                if kind == "option":
                    self.rules.setdefault(option_name(name), {})[value] = rest[1:]
                else:
                    self.defaults[option_name(name)] = value
            else:
                raise QueueConfError(f"{where}: expected 'command qsub ...', 'option NAME=VALUE|* ...' or "
                                     f"'default NAME=VALUE', got {line.strip()!r}")
        if not self.command:
            raise QueueConfError(f"{source}: no 'command qsub ...' line")

    @classmethod
    def find(cls, path: Optional[str]) -> "QueueConf":
        """``path``'s rules; without a path, conf/queue.conf's if it exists, else DEFAULT's."""
        if path is None and not KALDI_PATH.exists():
            return cls(DEFAULT, "queue_jobs.py's default queue.conf")
        path = Path(path or KALDI_PATH)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as err:
            raise QueueConfError(f"--config {path}: {err.strerror}") from None
        return cls(text, str(path))

    def arguments(self, values: Dict[str, Optional[str]]) -> List[str]:
        """qsub's arguments for the options' values (None: not given, then the file's default if any)."""
        out: List[str] = []
        for name, value in values.items():
            name = option_name(name)
            value = self.defaults.get(name) if value is None else str(value)
            if value is None:
                continue
            rules = self.rules.get(name, {})
            rule = rules[value] if value in rules else rules.get("*")
            if rule is None:
                raise QueueConfError(f"{self.source} has no rule for {name}={value} (add a line "
                                     f"'option {name}=* <qsub options, $0 for the value>')")
            out += [word.replace("$0", value) for word in rule]
        return out
