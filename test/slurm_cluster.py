"""A private single-node Slurm cluster for tests: its own munged, slurmctld and slurmd.

Everything lives in one temp dir (config, state, spool, logs, munge socket and key), on ports
of its own, so it neither needs nor touches a system Slurm. Needs root (slurmd runs jobs as
their users) and Debian's slurm-wlm and munge. ``stop()`` ends every daemon it started, by pid.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "scancel", "sinfo")


def missing_tools() -> List[str]:
    return [name for name in DAEMONS + CLIENTS if shutil.which(name) is None and not Path(f"/usr/sbin/{name}").exists()]


def free_port() -> int:
    return free_ports(1)[0]


def free_ports(n: int) -> List[int]:
    """``n`` distinct free ports: each socket stays bound until all are picked (one after another,
    the kernel may hand out a just-closed port again, and two daemons would then share it)."""
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def memory_mb() -> int:
    """Most of this machine's memory, for the node's RealMemory (so that --mem can be satisfied)."""
    with open("/proc/meminfo") as f:
        total_kb = int(f.readline().split()[1])
    return total_kb * 8 // 10 // 1024


def tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    backend = "slurm"  # queue_jobs.py's name for it

    def __init__(self):
        # munged checks that every directory above its socket is searchable by all: not pytest's tmp dirs
        self.root = Path(tempfile.mkdtemp(prefix="espnet_mtla_slurm_"))
        self.root.chmod(0o755)
        self.conf = self.root / "slurm.conf"
        self.env: Dict[str, str] = dict(os.environ, SLURM_CONF=str(self.conf))
        self.pid_files = {"munged": self.root / "munge" / "munged.pid", "slurmctld": self.root / "slurmctld.pid",
                          "slurmd": self.root / "slurmd.pid"}

    def start(self, cpus: int = 2) -> "SlurmCluster":
        munge = self.root / "munge"
        munge.mkdir()
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        shutil.chown(munge, "munge", "munge")
        shutil.chown(key, "munge", "munge")
        key.chmod(0o400)
        socket_path = munge / "munge.sock"
        subprocess.run(["runuser", "-u", "munge", "--", tool("munged"), f"--socket={socket_path}",
                        f"--key-file={key}", f"--pid-file={self.pid_files['munged']}",
                        f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}"], check=True)
        host = socket.gethostname()
        ctld_port, slurmd_port = free_ports(2)
        for name in ("state", "spool"):
            (self.root / name).mkdir()
        self.conf.write_text("\n".join([
            "ClusterName=espnetmtlatest", f"SlurmctldHost={host}",
            f"SlurmctldPort={ctld_port}", f"SlurmdPort={slurmd_port}",
            "AuthType=auth/munge", f"AuthInfo=socket={socket_path}",
            f"StateSaveLocation={self.root / 'state'}", f"SlurmdSpoolDir={self.root / 'spool'}",
            f"SlurmctldPidFile={self.pid_files['slurmctld']}", f"SlurmdPidFile={self.pid_files['slurmd']}",
            f"SlurmctldLogFile={self.root / 'slurmctld.log'}", f"SlurmdLogFile={self.root / 'slurmd.log'}",
            "SlurmUser=root", "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU", "MpiDefault=none", "ReturnToService=2",
            f"NodeName={host} CPUs={cpus} RealMemory={memory_mb()} State=UNKNOWN",
            f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP", ""]))
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([tool(daemon), "-f", str(self.conf)], env=self.env, check=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            state = subprocess.run(["sinfo", "-h", "-o", "%T"], env=self.env, capture_output=True, text=True)
            if state.stdout.strip() == "idle":
                return self
            time.sleep(0.5)
        logs = "".join(p.read_text()[-400:] for p in sorted(self.root.glob("slurm*.log")))
        raise RuntimeError(f"the test Slurm cluster did not come up: {logs.strip()}")

    def jobs(self) -> Dict[str, str]:
        """Running or pending jobs: name -> job id."""
        out = subprocess.run(["squeue", "-h", "-o", "%j %i"], env=self.env, capture_output=True, text=True).stdout
        return dict(line.split() for line in out.splitlines() if line.strip())

    def cancel(self, job_id: str) -> None:
        subprocess.run(["scancel", job_id], env=self.env, check=True)

    def pid(self, daemon: str) -> Optional[int]:
        path = self.pid_files[daemon]
        return int(path.read_text().split()[0]) if path.exists() and path.read_text().strip() else None

    def stop(self) -> None:
        for daemon in ("slurmd", "slurmctld", "munged"):
            pid = self.pid(daemon)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            for _ in range(100):  # wait for it to go (up to 10 s)
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)
