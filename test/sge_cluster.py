"""A private single-host Grid Engine cell for tests: its own sge_qmaster and sge_execd.

Everything lives in one temp dir (SGE_ROOT: the cell's bootstrap, its spool, the execd's
spool), on ports of its own (SGE_QMASTER_PORT, SGE_EXECD_PORT), so it neither needs nor
touches a system cell (Debian's /var/lib/gridengine). Needs root (sge_execd runs jobs as their
users) and Debian's gridengine-master, gridengine-exec and gridengine-client. The cell has
one queue, ``all.q``, with ``slots`` slots, a parallel environment ``smp`` (all slots on one
host, as Kaldi's ``-pe smp N`` expects), a consumable ``gpu`` complex with ``gpus`` on the
host, and the stock ``mem_free`` (requestable). ``stop()`` ends every daemon it started, by pid.
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

from slurm_cluster import free_ports

CLIENTS = ("qsub", "qstat", "qdel", "qconf")
DEBIAN = Path("/usr/share/gridengine")  # Debian's templates: the global configuration, the stock complexes
LIB = Path("/usr/lib/gridengine")  # the binaries (and spoolinit/spooldefaults, which initialise a spool)
DAEMONS = {"sge_qmaster": Path("/usr/sbin/sge_qmaster"), "sge_execd": Path("/usr/sbin/sge_execd")}


def missing_tools() -> List[str]:
    found = [shutil.which(name) for name in CLIENTS]
    missing = [name for name, path in zip(CLIENTS, found) if path is None]
    missing += [name for name, path in DAEMONS.items() if not path.exists()]
    missing += [p.name for p in (LIB / "spoolinit", LIB / "spooldefaults", DEBIAN / "default-configuration")
                if not p.exists()]
    return missing


def with_values(config: str, values: Dict[str, str]) -> str:
    """SGE's ``key value`` lines of ``config``, with the values of the keys in ``values`` replaced."""
    lines = []
    for line in config.splitlines():
        key = line.split(maxsplit=1)[0] if line.strip() else ""
        lines.append(f"{key} {values[key]}" if key in values else line)
    return "\n".join(lines) + "\n"


def reverse_name(host: str) -> str:
    """The name that ``host``'s address resolves back to (OSError when ``host`` does not resolve)."""
    address = socket.gethostbyname(host)
    try:
        return socket.gethostbyaddr(address)[0]
    except OSError:  # no reverse entry: SGE then uses the address's name as given
        return host


class SgeCluster:
    backend = "sge"  # queue_jobs.py's name for it

    def __init__(self):
        self.root = Path(tempfile.mkdtemp(prefix="espnet_mtla_sge_"))
        self.root.chmod(0o755)  # the jobs' shepherds read the cell's files
        self.common = self.root / "default" / "common"
        self.spool = self.root / "spool"
        self.host = socket.gethostname()
        qmaster_port, execd_port = free_ports(2)
        self.env: Dict[str, str] = dict(os.environ, SGE_ROOT=str(self.root), SGE_CELL="default",
                                        SGE_QMASTER_PORT=str(qmaster_port), SGE_EXECD_PORT=str(execd_port))

    def start(self, slots: int = 4, gpus: int = 2) -> "SgeCluster":
        self.common.mkdir(parents=True)
        for name in ("qmaster", "execd"):
            (self.spool / name).mkdir(parents=True)
        # Classic (flat file) spooling: no Berkeley DB environment to set up. admin_user root: the
        # daemons keep root's rights (the spool is root's).
        spool_params = f"{self.common};{self.spool / 'qmaster'}"
        (self.common / "bootstrap").write_text("\n".join([
            "admin_user root", "default_domain none", "ignore_fqdn true", "spooling_method classic",
            "spooling_lib libspoolc", f"spooling_params {spool_params}", "binary_path /usr/sbin",
            f"qmaster_spool_dir {self.spool / 'qmaster'}", "security_mode none", "listener_threads 2",
            "worker_threads 2", "scheduler_threads 1", ""]))
        (self.common / "act_qmaster").write_text(self.host + "\n")
        # SGE checks that a peer's address resolves back to the name it gives. Where this host's name
        # is an alias of a loopback address (127.0.0.1 vm, after localhost: containers), it resolves
        # back to "localhost" and every connection is refused: declare the names one host.
        try:
            back = reverse_name(self.host)
        except OSError:
            raise RuntimeError(f"this host's name {self.host!r} does not resolve (add it to /etc/hosts)") from None
        if back != self.host:
            (self.common / "host_aliases").write_text(f"{self.host} {back}\n")
        self.run(LIB / "spoolinit", "classic", "libspoolc", spool_params, "init")
        self.run(LIB / "spooldefaults", "configuration", self.global_configuration())
        self.run(LIB / "spooldefaults", "complexes", DEBIAN / "util" / "resources" / "centry")
        self.run(LIB / "spooldefaults", "usersets", DEBIAN / "util" / "resources" / "usersets")
        self.run(LIB / "spooldefaults", "managers", "root")
        self.run(DAEMONS["sge_qmaster"])
        self.wait("sge_qmaster", lambda: self.run("qconf", "-sh", check=False).returncode == 0)
        self.configure(slots, gpus)
        self.run(DAEMONS["sge_execd"])
        self.wait("sge_execd", self.ready)
        return self

    def global_configuration(self) -> Path:
        """Debian's global configuration, with root's jobs allowed (Debian refuses uids < 1000: the
        tests run as root, as the Slurm ones do) and the execd spool here."""
        path = self.root / "configuration"
        path.write_text(with_values((DEBIAN / "default-configuration").read_text(), {
            "execd_spool_dir": str(self.spool / "execd"), "min_uid": "0", "min_gid": "0"}))
        return path

    def configure(self, slots: int, gpus: int) -> None:
        """This host as submit and exec host, the gpu complex, the smp PE, all.q, and a scheduler
        that runs every second (the default waits up to 15 s before starting a job)."""
        self.qconf_from("-Msconf", with_values(self.run("qconf", "-ssconf").stdout, {
            "schedule_interval": "0:0:1", "flush_submit_sec": "1", "flush_finish_sec": "1",
            "job_load_adjustments": "NONE", "load_adjustment_decay_time": "0:0:0"}))
        complexes = self.run("qconf", "-sc").stdout
        self.qconf_from("-Mc", complexes + "gpu gpu INT <= YES YES 0 0\n")
        self.run("qconf", "-as", self.host)
        self.qconf_from("-Ae", f"hostname {self.host}\nload_scaling NONE\ncomplex_values gpu={gpus}\n"
                               "user_lists NONE\nxuser_lists NONE\nprojects NONE\nxprojects NONE\n"
                               "usage_scaling NONE\nreport_variables NONE\n")
        self.qconf_from("-Ap", "pe_name smp\nslots 9999\nuser_lists NONE\nxuser_lists NONE\n"
                               "start_proc_args NONE\nstop_proc_args NONE\nallocation_rule $pe_slots\n"
                               "control_slaves FALSE\njob_is_first_task TRUE\nurgency_slots min\n"
                               "accounting_summary FALSE\nqsort_args NONE\n")
        # load_thresholds NONE: a busy test machine must not put the queue in alarm state.
        # shell_start_mode unix_behavior: a job script runs with the shell its #! line names.
        queue = {"qname": "all.q", "hostlist": self.host, "seq_no": "0", "load_thresholds": "NONE",
                 "suspend_thresholds": "NONE", "nsuspend": "1", "suspend_interval": "00:05:00", "priority": "0",
                 "min_cpu_interval": "00:05:00", "processors": "UNDEFINED", "qtype": "BATCH INTERACTIVE",
                 "ckpt_list": "NONE", "pe_list": "smp", "rerun": "FALSE", "slots": str(slots), "tmpdir": "/tmp",
                 "shell": "/bin/bash", "prolog": "NONE", "epilog": "NONE", "shell_start_mode": "unix_behavior",
                 "starter_method": "NONE", "suspend_method": "NONE", "resume_method": "NONE",
                 "terminate_method": "NONE", "notify": "00:00:60", "owner_list": "NONE", "user_lists": "NONE",
                 "xuser_lists": "NONE", "subordinate_list": "NONE", "complex_values": "NONE", "projects": "NONE",
                 "xprojects": "NONE", "calendar": "NONE", "initial_state": "default"}
        limits = {f"{kind}_{name}": "INFINITY" for name in ("rt", "cpu", "fsize", "data", "stack", "core", "rss",
                                                            "vmem") for kind in ("s", "h")}
        self.qconf_from("-Aq", "".join(f"{k} {v}\n" for k, v in {**queue, **limits}.items()))

    def run(self, *command, check: bool = True) -> subprocess.CompletedProcess:
        done = subprocess.run([str(c) for c in command], env=self.env, capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, command))}: {(done.stderr or done.stdout).strip()}")
        return done

    def qconf_from(self, option: str, text: str) -> None:
        """``qconf -A.../-M... file`` with ``text`` as the file."""
        path = self.root / f"qconf{option}"
        path.write_text(text)
        self.run("qconf", option, path)

    def ready(self) -> bool:
        """all.q on this host takes jobs: its execd has reported (no 'u'nknown or 'a'larm state)."""
        out = self.run("qstat", "-f", "-q", "all.q", check=False).stdout
        states = [line.split()[5:] for line in out.splitlines() if line.startswith("all.q@")]
        return bool(states) and states[0] == []

    def wait(self, daemon: str, condition, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if condition():
                return
            time.sleep(0.3)
        said = [line for p in sorted(self.spool.rglob("messages")) for line in p.read_text().splitlines()]
        raise RuntimeError(f"{daemon} did not come up in {timeout:.0f} s; its last message: "
                           f"{said[-1] if said else 'none'}")

    def jobs(self) -> Dict[str, str]:
        """Running or pending jobs: name -> job id (an array job is one entry)."""
        out = self.run("qstat", "-u", "*", check=False).stdout.splitlines()[2:]
        return {fields[2]: fields[0] for fields in (line.split() for line in out) if len(fields) > 2}

    def running_tasks(self, job_id: str) -> List[int]:
        """The array tasks of ``job_id`` that run now (state r)."""
        out = self.run("qstat", "-u", "*", check=False).stdout.splitlines()[2:]
        return [int(f[-1]) for f in (line.split() for line in out) if f and f[0] == job_id and f[4] == "r"]

    def delete(self, job_id: str, task: Optional[int] = None) -> None:
        self.run("qdel", job_id, *(["-t", str(task)] if task is not None else []))

    def pid(self, daemon: str) -> Optional[int]:
        name = "qmaster.pid" if daemon == "sge_qmaster" else "execd.pid"
        for path in sorted(self.spool.rglob(name)):  # the execd's spool dir is named after its host
            text = path.read_text().strip()
            if text:
                return int(text.split()[0])
        return None

    def stop(self) -> None:
        # The execd first (it reports its jobs' ends), then the qmaster. The cell is thrown away with
        # its spool, so a long orderly shutdown (the qmaster's takes 7-9 s here) buys nothing: each
        # gets a few seconds, then SIGKILL.
        for daemon, grace in (("sge_execd", 5.0), ("sge_qmaster", 2.0)):
            pid = self.pid(daemon)
            if pid is None or not alive(pid):
                continue
            os.kill(pid, signal.SIGTERM)
            deadline = time.time() + grace
            while alive(pid) and time.time() < deadline:
                time.sleep(0.1)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
                while alive(pid):
                    time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a daemon's exit leaves a zombie until init reaps it: not running)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return "State:\tZ" not in f.read()
    except FileNotFoundError:
        return False
