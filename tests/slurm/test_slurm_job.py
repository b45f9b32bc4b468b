"""jobscripts/slurm_cpu.sh on a real (local, single-node) Slurm: the time-limit signal makes
the run checkpoint and exit 75, the script requeues the job, the requeued job resumes from
the checkpoint and finishes with a complete output file.

The run is a 2-rank tempering run at L = 4 sized from a short calibration run (srun, same
node) to last about 75 s, so the time-limit signal (--time=1 --signal=B:USR1@10: sent 20-50 s
after the start, slurmctld checks every 30 s) always comes while it is measuring. Once the
signal has been seen, the test raises the job's time limit, so the requeued run is not
signalled again and the job is requeued exactly once. About 2 minutes in all.
"""

from __future__ import annotations

import math
import re
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slurm

REPO = Path(__file__).resolve().parents[2]
JOB_SCRIPT = REPO / "jobscripts" / "slurm_cpu.sh"
RUN_SECONDS = 75.0  # target length of the measurement; must exceed 50 s (latest signal)

CONFIG = """\
[lattice]
kind = "square"
L = 4

[model]
mu = -2.5

[temperatures]
values = [0.05, 0.1]
exchange_every = 10

[effective_model]
kind = "linear"
shells = 3
bond_shells = 0

[slmc]
local_updates = 16

[training]
every = 20

[run]
thermalize = 100
step_size = 0.5
measure = {measure}
snapshot_every = {snapshot_every}
progress_every = 10
seed = 7
"""


def _stamp(log: str, pattern: str) -> float | None:
    """Unix time of the first line of the job script's log that matches ``pattern``."""
    for line in log.splitlines():
        m = re.match(r"\[job (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] (.*)", line)
        if m and re.search(pattern, m.group(2)):
            return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S").timestamp()
    return None


def _steps_per_second(slurm, venv: Path, workdir: Path) -> float:
    """Measured steps/s of this run on 2 ranks under srun (also checks srun --mpi=pmix)."""
    cfg = workdir / "calibrate.toml"
    cfg.write_text(CONFIG.format(measure=3000, snapshot_every=1000))
    r = slurm.run("srun", "--mpi=pmix", "-n", "2", "--time=2", str(venv / "bin" / "slmc-hpc"), "run", str(cfg),
                  "--output", str(workdir / "calibrate.h5"), check=False, timeout=150, cwd=workdir,
                  env={"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})
    assert r.returncode == 0, f"calibration run under srun failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    import h5py

    with h5py.File(workdir / "calibrate.h5", "r") as f:
        seconds = float(np.mean(f["summary/seconds_per_step"][:]))
    return 1.0 / seconds


def test_time_limit_checkpoint_requeue_resume(slurm, slmc_venv, tmp_path):
    import h5py

    venv = slmc_venv
    t_cal = time.monotonic()
    rate = _steps_per_second(slurm, venv, tmp_path)
    measure = int(math.ceil(rate * RUN_SECONDS / 1000.0)) * 1000
    print(f"\ncalibration: {rate:.0f} steps/s on 2 ranks ({time.monotonic() - t_cal:.1f} s); measure = {measure}")

    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(measure=measure, snapshot_every=max(1000, measure // 10)))
    output = tmp_path / "runs" / "run.h5"
    log_path = tmp_path / "job.log"
    env = {"VENV": str(venv)}
    submitted = time.time()
    r = slurm.run("sbatch", "--parsable", "--ntasks=2", "--time=1", "--signal=B:USR1@10",
                  f"--output={log_path}", "--job-name=slmc-requeue-test", str(JOB_SCRIPT), str(cfg), str(output),
                  cwd=tmp_path, env=env)
    job = r.stdout.strip().split(";")[0]

    def log() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    def explain() -> str:
        return (f"job {job}: {slurm.job_info(job)}\n--- job log\n{log()}\n--- daemons\n{slurm.logs()}")

    # Wait for the signal; then give the job room, so that the requeued run is not signalled too.
    ended = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")
    deadline = time.monotonic() + 120
    while "received SIGUSR1" not in log():
        assert slurm.job_info(job).get("JobState") not in ended, \
            f"job ended before the time-limit signal (run too short?)\n{explain()}"
        assert time.monotonic() < deadline, f"no time-limit signal within 120 s\n{explain()}"
        time.sleep(0.5)
    for attempt in range(10):
        if slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=10", check=False).returncode == 0:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"could not raise the time limit of job {job}\n{explain()}")

    deadline = time.monotonic() + 180
    while True:
        info = slurm.job_info(job)
        if info.get("JobState") in ended:
            break
        assert time.monotonic() < deadline, f"job not finished 180 s after the signal\n{explain()}"
        time.sleep(1)
    done = time.time()
    text = log()

    t_signal = _stamp(text, r"received SIGUSR1")
    t_exit75 = _stamp(text, r"exited with code 75")
    t_requeue = _stamp(text, r"requeueing job")
    t_restart = _stamp(text, r"restart 1:")
    t_done = _stamp(text, r"exited with code 0")
    print(f"job {job}: submit -> signal {t_signal - submitted:.0f} s, -> exit 75 {t_exit75 - submitted:.0f} s, "
          f"-> requeued {t_requeue - submitted:.0f} s, -> running again {t_restart - submitted:.0f} s, "
          f"-> complete {t_done - submitted:.0f} s (seen {done - submitted:.0f} s)" if None not in
          (t_signal, t_exit75, t_requeue, t_restart, t_done) else f"job {job}: timestamps missing")

    assert info["JobState"] == "COMPLETED" and info.get("ExitCode") == "0:0", explain()
    assert info.get("Restarts") == "1", explain()
    assert text.count("received SIGUSR1") == 1, explain()
    assert text.count("exited with code 75") == 1, explain()
    # "requeued" (logged after `scontrol requeue` returns) may never be written: Slurm kills the
    # batch script as it requeues the job, sometimes before the script's next line (seen in CI)
    assert text.count("requeueing job") == 1, explain()
    assert text.count("resuming from") == 1, explain()
    assert text.index("exited with code 75") < text.index("resuming from") < text.index("exited with code 0"), \
        explain()
    assert "restart 0:" in text and "restart 1:" in text, explain()

    with h5py.File(output, "r") as f:
        n_written = f["measure/n_written"][:]
        assert n_written.tolist() == [measure, measure], n_written
        assert "summary" in f
        assert np.isfinite(f["measure/free_energy"][:]).all()  # no gap at the restart
        assert np.isfinite(f["summary/free_energy_per_site"][:]).all()


def test_scancel_checkpoints_and_stays_cancelled(slurm, slmc_venv, tmp_path):
    """scancel sends SIGTERM to the batch shell and the ranks: the run checkpoints, but the
    job script must not requeue a job the user cancelled."""
    import h5py

    venv = slmc_venv
    cfg = tmp_path / "run.toml"
    cfg.write_text(CONFIG.format(measure=2_000_000, snapshot_every=100_000))
    output = tmp_path / "run.h5"
    log_path = tmp_path / "job.log"
    r = slurm.run("sbatch", "--parsable", "--ntasks=2", "--time=10", f"--output={log_path}",
                  "--job-name=slmc-scancel-test", str(JOB_SCRIPT), str(cfg), str(output),
                  cwd=tmp_path, env={"VENV": str(venv)})
    job = r.stdout.strip().split(";")[0]

    def log() -> str:
        return log_path.read_text(errors="replace") if log_path.exists() else ""

    deadline = time.monotonic() + 60
    while "measuring" not in log():
        assert time.monotonic() < deadline, f"run did not start measuring\n{log()}\n{slurm.job_info(job)}"
        time.sleep(0.5)
    time.sleep(2)
    slurm.run("scancel", job)
    deadline = time.monotonic() + 60
    while "MPI launcher exited" not in log() or slurm.job_info(job).get("JobState") not in ("CANCELLED", None):
        assert time.monotonic() < deadline, f"job did not end after scancel\n{log()}\n{slurm.job_info(job)}"
        time.sleep(0.5)
    time.sleep(3)  # a requeue, if the script wrongly made one, would show by now
    info, text = slurm.job_info(job), log()
    assert info.get("JobState") == "CANCELLED" and info.get("Restarts") == "0", (info, text)
    assert "exited with code 75" in text and "not requeued" in text and "requeueing" not in text, text
    assert Path(f"{output}.ckpt").exists(), text
    with h5py.File(output, "r") as f:
        assert 0 < f["measure/n_written"][0] < 2_000_000
