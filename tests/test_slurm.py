"""slurm/: training on a real 2-node Slurm cluster that slurm/dev-cluster.sh starts on this machine (slow; needs
root), through launch/submit.py and through slurm/train.sbatch. The fast tests of the launcher are in
tests/test_launch_plan.py (planning, pre-flight checks, the command) and tests/test_launch_supervisor.py (the node
side)."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO
from helpers import LAUNCH, adapter_tensors, trace, write_config

from launch import slurm

SUBMIT = [sys.executable, str(REPO / "launch" / "submit.py")]
DEV_CLUSTER = REPO / "slurm" / "dev-cluster.sh"


@pytest.mark.parametrize("script", ["dev-cluster.sh", "train.sbatch"])
def test_shell_scripts_parse(script):
    proc = subprocess.run(["bash", "-n", str(REPO / "slurm" / script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------------------------------------
# slow: a real Slurm cluster on this machine


class Cluster:
    def __init__(self, env: dict, state: Path):
        self.env, self.state = env, state

    def slurm(self, *args: str, check: bool = True, env: dict | None = None) -> str:
        return subprocess.run(list(args), env=self.env | (env or {}), capture_output=True, text=True, check=check,
                              timeout=60).stdout

    def state_of(self, job_id: str) -> str:
        out = self.slurm("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State", check=False).split("\n")
        return out[-2].strip() if len(out) > 1 else ""


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("the Slurm dev cluster needs root (network namespaces)")
    if not shutil.which("apt-get") and not shutil.which("slurmctld", path=os.environ.get("PATH", "") + ":/usr/sbin"):
        pytest.skip("no Slurm packages and no apt-get to install them")
    install = subprocess.run([str(DEV_CLUSTER), "install"], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"could not install the Slurm packages: {install.stderr.strip()[-500:]}")
    state = Path(tempfile.mkdtemp(prefix="sqlft-slurm-test-", dir="/var/tmp"))
    env = None
    try:
        for index in range(40, 60):  # a free index: bridge, subnet and ports of its own
            env = os.environ | {"SQLFT_SLURM_INDEX": str(index), "SQLFT_SLURM_STATE": str(state)}
            up = subprocess.run([str(DEV_CLUSTER), "up"], env=env, capture_output=True, text=True, timeout=300)
            if up.returncode != 3:
                break
        if up.returncode == 4:
            pytest.skip(f"no dev cluster here: {up.stderr.strip()[-300:]}")
        assert up.returncode == 0, f"dev cluster did not come up:\n{up.stdout}\n{up.stderr}"
        slurm_env = {"SLURM_CONF": str(state / "etc" / "slurm.conf"), "OMP_NUM_THREADS": "1",
                     "WANDB_MODE": "offline", "WANDB_SILENT": "true", "SQLFT_ALLOW_LOCAL_OUTPUT": "1"}
        saved = {k: os.environ.get(k) for k in slurm_env}
        os.environ.update(slurm_env)  # submitit's sacct calls in this process
        try:
            yield Cluster(env | slurm_env, state)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    finally:
        if env is not None:
            subprocess.run([str(DEV_CLUSTER), "down", "--purge"], env=env, capture_output=True, timeout=120)


def submit(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    # --exit-grace: a process stuck in teardown after the adapter is written (a rare gloo abort at exit on CPU)
    # costs 30 s, not 300
    proc = subprocess.run(SUBMIT + ["--exit-grace", "30", *args], env=cluster.env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def job_of(run_dir: Path):
    import submitit

    info = json.loads((run_dir / "job.json").read_text())
    return submitit.SlurmJob(folder=info["submitit_dir"], job_id=info["job_id"], tasks=tuple(range(info["nodes"])))


def logs(run_dir: Path, task: int, ext: str = "out") -> str:
    return "".join(p.read_text(errors="replace") for p in sorted((run_dir / "submitit").glob(f"*_{task}_log.{ext}")))


def wait_until(cond, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.mark.slow
def test_two_nodes_train_and_write_an_adapter(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file, LAUNCH)
    proc = submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "runs"),
                  "--run-name", "two", "--time", "10", "--wait")
    run = tmp_path / "runs" / "two"
    assert "submitted job" in proc.stdout and "run two: COMPLETED" in proc.stdout, proc.stdout
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    # both nodes took part: one task per node, machine ranks 0 and 1 on different hosts, 2 ranks in the checkpoint
    assert re.search(r"node 0/2 \(machine_rank 0\) on node1, .*head node1:\d+", logs(run, 0))
    assert re.search(r"node 1/2 \(machine_rank 1\) on node2, .*head node1:\d+", logs(run, 1))
    final = run / "checkpoints" / "step-000010"
    assert json.loads((final / "state.json").read_text())["world_size"] == 2
    assert (final / "rng-rank0.pt").is_file() and (final / "rng-rank1.pt").is_file()
    info = json.loads((run / "job.json").read_text())
    assert set(info["logs"]) == {"node0", "node1"} and "submitted with" in (run / "command.txt").read_text()


@pytest.mark.slow
def test_preempted_and_requeued_job_resumes_to_the_same_result(cluster, tiny_model, rows_file, tmp_path):
    """Interrupted twice, by the signal Slurm sends ahead of the time limit (USR2: node 0 requeues) and by
    `scontrol requeue` (SIGTERM: Slurm requeues), it ends exactly where an uninterrupted run ends."""
    # log_every 2 with W&B on: Slurm's SIGTERM also kills W&B's wandb-core; the tracker must survive a W&B call
    # failing between the signal and the checkpoint (ft/tracking.py switches W&B off and goes on).
    cfg = write_config(tmp_path, tiny_model, rows_file, LAUNCH, train={"max_steps": 150, "log_every": 2})
    # the uninterrupted reference: the same 2 nodes x 1 process, run by --local (no Slurm)
    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "ref"), "--run-name", "ref",
           "--local")
    ref_run = tmp_path / "ref" / "ref"

    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "runs"), "--run-name",
           "pre", "--time", "10", "--tracking.wandb", "true")
    run = tmp_path / "runs" / "pre"
    job = job_of(run)
    wait_until(lambda: len(trace(run, missing_ok=True)) >= 10, 120, "10 training steps")
    cluster.slurm("scancel", "--signal=USR2", job.job_id)
    resumed = wait_until(lambda: re.findall(r"resumed from \S+ at step (\d+)", logs(run, 0, "err")), 120,
                         "the requeued job to resume")
    first = int(resumed[0])
    wait_until(lambda: max(trace(run, missing_ok=True), default=0) >= first + 10, 120,
               "10 more steps after the resume")
    cluster.slurm("scontrol", "requeue", job.job_id)
    [(state, result)] = slurm.wait_for([job], timeout_s=240)
    assert state == "COMPLETED", result
    assert result["restarts"] == 2 and result["step"] == 150, result

    steps = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", logs(run, 0, "err"))]
    assert len(steps) == 2 and 0 < steps[0] < steps[1] < 150, steps
    assert "got SIGUSR2" in logs(run, 0, "err") and "got SIGTERM" in logs(run, 0, "err")
    assert "restart 1;" in logs(run, 1) and "restart 2;" in logs(run, 1)
    a, b = adapter_tensors(ref_run / "adapter"), adapter_tensors(run / "adapter")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert trace(ref_run, missing_ok=True) == trace(run, missing_ok=True)
    # one W&B run across the three attempts
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 3 and len(ids) == 1, ids


@pytest.mark.slow
def test_sweep_of_two_values_gives_two_runs(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file, LAUNCH, train={"max_steps": 6})
    proc = submit(cluster, "--config", str(cfg), "--nodes", "1", "--output-root", str(tmp_path / "runs"),
                  "--run-name", "sw", "--sweep", "lora.r=4,8", "--time", "10", "--wait")
    assert "submitted job array" in proc.stdout
    for r in (4, 8):
        run = tmp_path / "runs" / "sw" / f"r{r}"
        assert f"run sw-r{r}: COMPLETED" in proc.stdout, proc.stdout
        assert json.loads((run / "adapter" / "adapter_config.json").read_text())["r"] == r
        resolved = yaml.safe_load((run / "checkpoints" / "step-000006" / "config.yaml").read_text())
        assert resolved["tracking"]["run_name"] == f"sw-r{r}" and resolved["tracking"]["group"] == "sw"
        assert resolved["train"]["output_dir"] == str(run)


@pytest.mark.slow
def test_cancelled_job_leaves_only_complete_checkpoints(cluster, tiny_model, rows_file, tmp_path):
    from ft import checkpoint as ckpt

    cfg = write_config(tmp_path, tiny_model, rows_file, LAUNCH, train={"max_steps": 2000})
    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "runs"), "--run-name",
           "cx", "--time", "10", "--checkpoint.every", "1", "--checkpoint.keep_last", "3")
    run = tmp_path / "runs" / "cx"
    job = job_of(run)
    wait_until(lambda: len(ckpt.complete_checkpoints(run)) >= 2, 120, "two checkpoints")
    cluster.slurm("scancel", job.job_id)  # mid-step or mid-checkpoint
    [(state, result)] = slurm.wait_for([job], timeout_s=120)
    assert state.startswith("CANCELLED"), (state, result)
    time.sleep(1)
    assert cluster.state_of(job.job_id).startswith("CANCELLED")  # not requeued
    assert "restart 1" not in logs(run, 0)
    assert not (run / "adapter").exists()
    complete = ckpt.complete_checkpoints(run)
    assert complete and ckpt.find_resume(run, "auto") == complete[-1]
    for path in complete:  # whatever resume could take is whole
        state_ = json.loads((path / "state.json").read_text())
        assert path.name == f"step-{state_['step']:06d}" and state_["world_size"] == 2
        for name in ("optimizer.pt", "scheduler.pt", "config.yaml", "rng-rank0.pt", "rng-rank1.pt"):
            assert (path / name).is_file(), (path, name)
        assert adapter_tensors(path / "adapter")
        import torch

        assert torch.load(path / "optimizer.pt", weights_only=False)["state"]
    for other in (run / "checkpoints").iterdir():  # anything else is ignored by resume
        assert other in complete or not ckpt.is_complete(other)


@pytest.mark.slow
def test_presubmit_errors_against_the_cluster(cluster, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"tracking": {"wandb": False}}))
    base = SUBMIT + ["--config", str(cfg), "--output-root", str(tmp_path), "--time", "10", "--dry-run"]
    for extra, pattern in (
            (["--partition", "gpu"], "Partition 'gpu' does not exist on this cluster; partitions: debug"),
            (["--nodes", "2", "--gpus-per-node", "3"], "--gpus-per-node: 3 GPUs per node"),
            (["--nodes", "3"], "--nodes 3 is more than partition 'debug' has (2 nodes)")):
        proc = subprocess.run(base + extra, env=cluster.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and pattern in proc.stderr, proc.stderr
    ok = subprocess.run(base + ["--nodes", "2", "--gpus-per-node", "2"], env=cluster.env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "#SBATCH --gpus-per-node=2" in ok.stdout, ok.stderr


@pytest.mark.slow
def test_sbatch_template_checkpoints_and_requeues_on_its_signal(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file, LAUNCH, train={"max_steps": 80})
    env = {"SQLFT_REPO": str(REPO), "SQLFT_PYTHON": sys.executable, "SQLFT_OUTPUT_ROOT": str(tmp_path / "runs"),
           "SQLFT_RUN_NAME": "sb"}
    job_id = cluster.slurm("sbatch", "--parsable", "--time", "10", f"--output={tmp_path}/sbatch-%j.out",
                           str(REPO / "slurm" / "train.sbatch"), str(cfg), env=env).strip()
    run = tmp_path / "runs" / "sb"
    wait_until(lambda: len(trace(run, missing_ok=True)) >= 5, 120, "5 training steps")
    cluster.slurm("scancel", "--batch", "--signal=USR2", job_id)  # what --signal=B:USR2@120 sends
    state = wait_until(lambda: (s := cluster.state_of(job_id)) not in ("", "RUNNING", "PENDING", "REQUEUED") and s,
                       180, "the job to end", poll=1)
    batch = (tmp_path / f"sbatch-{job_id}.out").read_text()
    assert state == "COMPLETED", batch
    assert "got USR2" in batch and f"requeueing job {job_id}" in batch and "restart 1" in batch
    node0 = (run / "logs" / f"{job_id}-node0.err").read_text()
    assert re.search(r"resumed from \S+ at step \d+", node0)
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and max(trace(run, missing_ok=True)) == 80
    assert (run / "checkpoints" / "step-000080" / "rng-rank1.pt").is_file()  # both nodes' ranks
