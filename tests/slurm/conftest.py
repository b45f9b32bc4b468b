"""A real single-node Slurm on localhost for testing the job scripts in jobscripts/.

The session fixture ``slurm`` starts munged, slurmctld and slurmd as child processes of the
test run, each with its configuration, key, sockets, ports, state and logs in one temporary
directory (SLURM_CONF points the clients there; /etc/slurm and any Slurm or MUNGE already
running are left alone), waits until ``sinfo`` shows the node idle, and at the end cancels
every job and stops exactly the daemons it started (by process id).

Needs root (slurmd runs the jobs as their owner, and SlurmUser=root). When the Slurm or MUNGE
programs are missing it apt-get installs ``slurmctld slurmd slurm-client munge`` (Slurm 22.05
on Debian 12, about 15 s), but only as root and only when CI is set (as on the CI machine) or
SLMC_SLURM_INSTALL=1; otherwise the tests skip and say why. SLMC_SLURM_TEST=0 skips them
always. If the node does not come up within a minute the tests skip with the daemons' logs;
if a daemon exits while starting, they fail with its log.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge"]
PROGRAMS = ["munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scontrol", "scancel"]
START_TIMEOUT = 60.0

# What the fast settings in the configuration are for:
#   cred_expire=5      a requeued job may start again after cred_expire seconds (default 120)
#   sched_interval=2, bf_interval=1   look at pending jobs every 1-2 s, so a requeued job
#                      starts as soon as it may (defaults 60 s and 30 s)
#   KillWait=5         SIGTERM -> SIGKILL at the time limit and on scancel (default 30 s)
#   MinJobAge=600      keep finished jobs' records (state, exit code, restarts) for the test
# Time-limit warnings (--signal) are sent by slurmctld's 30-second background check, which
# cannot be configured: a job with --time=1 --signal=B:USR1@10 gets the signal 20-50 s after
# it starts.
SLURM_CONF = """\
ClusterName=slmctest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket},cred_expire=5
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir}/state
SlurmdSpoolDir={dir}/spool
SlurmctldPidFile={dir}/slurmctld.pid
SlurmdPidFile={dir}/slurmd.pid
SlurmctldLogFile={dir}/log/slurmctld.log
SlurmdLogFile={dir}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
KillWait=5
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=1000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() not in ("", "0", "false", "no")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"({path} not readable)"
    return "\n".join(text[-lines:])


class LocalSlurm:
    """munged + slurmctld + slurmd on this host, all in ``self.dir``."""

    def __init__(self) -> None:
        self.host = socket.gethostname().split(".")[0]
        self.dir = Path(tempfile.mkdtemp(prefix="slmc-slurm-"))
        self.conf = self.dir / "slurm.conf"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        self.env["SLURM_CONF"] = str(self.conf)
        self.started_at: float | None = None
        self.start_seconds: float | None = None

    # -- running commands against this cluster -------------------------------------------
    def run(self, *args: str, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        env = dict(self.env, **kw.pop("env", {}))
        return subprocess.run(list(args), env=env, capture_output=True, text=True, check=check,
                              timeout=timeout, **kw)

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict (empty when Slurm no longer knows the job)."""
        out = self.run("scontrol", "show", "job", "--oneliner", job_id, check=False).stdout
        info = {}
        for field in out.split():
            key, sep, value = field.partition("=")
            if sep and key not in info:
                info[key] = value
        return info

    def logs(self) -> str:
        parts = []
        for name in ("munged", "slurmctld", "slurmd"):
            parts.append(f"--- {name} (stdout/stderr)\n{_tail(self.dir / 'log' / f'{name}.out')}")
        for name in ("slurmctld.log", "slurmd.log"):
            parts.append(f"--- {name}\n{_tail(self.dir / 'log' / name)}")
        return "\n".join(parts)

    # -- start and stop ------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.dir / "log" / f"{name}.out", "wb")
        # Own session: a Ctrl-C in the terminal goes to pytest, whose teardown stops these.
        self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            env=self.env, start_new_session=True)
        out.close()

    def _died(self) -> str | None:
        for name, p in self.procs.items():
            if p.poll() is not None:
                return f"{name} exited with code {p.returncode}"
        return None

    def start(self) -> None:
        t0 = time.monotonic()
        for sub in ("state", "spool", "log", "munge", "munge/key"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o755)
        os.chmod(self.dir / "munge", 0o755)  # the socket's directory must be searchable
        os.chmod(self.dir / "munge" / "key", 0o700)
        key = self.dir / "munge" / "key" / "munge.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, os.urandom(128))
        os.close(fd)
        sock = self.dir / "munge" / "munge.socket"
        self.conf.write_text(SLURM_CONF.format(
            host=self.host, dir=self.dir, munge_socket=sock, cpus=os.cpu_count() or 1,
            ctld_port=_free_port(), slurmd_port=_free_port()))

        self._spawn("munged", ["munged", "--foreground", "--force", f"--socket={sock}", f"--key-file={key}",
                               f"--log-file={self.dir / 'log' / 'munged.log'}",
                               f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
                               f"--seed-file={self.dir / 'munge' / 'munged.seed'}"])
        deadline = time.monotonic() + 15
        while not sock.exists():
            if self._died() or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not start ({self._died() or 'no socket after 15 s'})")
            time.sleep(0.1)

        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.host, "-f", str(self.conf)])
        deadline = time.monotonic() + START_TIMEOUT
        state = ""
        while True:
            died = self._died()
            if died:
                raise RuntimeError(f"{died} while starting")
            state = self.run("sinfo", "--noheader", "--nodes", self.host, "--format=%t", check=False,
                             timeout=15).stdout.strip()
            if state == "idle":
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"node {self.host} not idle after {START_TIMEOUT:.0f} s (state {state!r})")
            time.sleep(0.25)
        self.started_at = time.time()
        self.start_seconds = time.monotonic() - t0

    def stop(self) -> None:
        """Cancel every job of this cluster, then stop exactly the daemons started here."""
        if not self.procs:
            return
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            try:
                jobs = self.run("squeue", "--noheader", "--format=%A", check=False, timeout=15).stdout.split()
                if jobs:
                    self.run("scancel", *jobs, check=False, timeout=15)
                    deadline = time.monotonic() + 20  # KillWait=5: jobs end within seconds
                    while time.monotonic() < deadline and self.run(
                            "squeue", "--noheader", "--format=%A", check=False, timeout=15).stdout.split():
                        time.sleep(0.5)
            except (subprocess.SubprocessError, OSError):
                pass
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)
        self.procs.clear()
        if not _truthy(os.environ.get("SLMC_SLURM_KEEP")):
            shutil.rmtree(self.dir, ignore_errors=True)


def _install_reason() -> str | None:
    """None when the Slurm and MUNGE programs are there (installing them if allowed),
    else why the tests must skip."""
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if not missing:
        return None
    allowed = _truthy(os.environ.get("CI")) or _truthy(os.environ.get("SLMC_SLURM_INSTALL"))
    if not allowed:
        return (f"Slurm is not installed ({', '.join(missing)} missing); set SLMC_SLURM_INSTALL=1 to let the "
                f"test apt-get install {' '.join(PACKAGES)} (root only; CI does this by itself)")
    if shutil.which("apt-get") is None:
        return f"Slurm is not installed ({', '.join(missing)} missing) and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-q", *PACKAGES]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:  # maybe no package lists yet
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        return f"apt-get install {' '.join(PACKAGES)} failed: {r.stderr.strip()[-500:]}"
    missing = [p for p in PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"after apt-get install, still missing: {', '.join(missing)}"
    return None


@pytest.fixture(scope="session")
def slurm():
    """A running single-node Slurm (LocalSlurm); skips when it cannot be had here."""
    if not _truthy(os.environ.get("SLMC_SLURM_TEST", "1")):
        pytest.skip("SLMC_SLURM_TEST=0")
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("the local Slurm test cluster needs root (slurmd, SlurmUser=root)")
    t0 = time.monotonic()
    reason = _install_reason()
    if reason:
        pytest.skip(reason)
    install_seconds = time.monotonic() - t0
    cluster = LocalSlurm()
    atexit.register(cluster.stop)  # in case the session dies before teardown
    try:
        cluster.start()
    except TimeoutError as exc:
        logs = cluster.logs()
        cluster.stop()
        pytest.skip(f"local Slurm did not come up: {exc}\n{logs}")
    except BaseException as exc:
        logs = cluster.logs()
        cluster.stop()
        if isinstance(exc, RuntimeError):
            pytest.fail(f"local Slurm daemons failed: {exc}\n{logs}", pytrace=False)
        raise
    print(f"\nlocal Slurm up in {cluster.start_seconds:.1f} s (install/check {install_seconds:.1f} s), "
          f"config {cluster.conf}")
    try:
        yield cluster
    finally:
        cluster.stop()
        atexit.unregister(cluster.stop)


@pytest.fixture(scope="session")
def slmc_venv() -> Path:
    """The environment whose slmc-hpc the job scripts run (their VENV): SLMC_SLURM_TEST_VENV,
    else the one running the tests, else the repository's .venv."""
    if os.environ.get("SLMC_SLURM_TEST_VENV"):
        venv = Path(os.environ["SLMC_SLURM_TEST_VENV"])
    else:
        venv = Path(sys.prefix)
        if not (venv / "bin" / "slmc-hpc").exists():
            venv = REPO / ".venv"
    assert (venv / "bin" / "slmc-hpc").exists(), f"no slmc-hpc in {venv}"
    return venv
