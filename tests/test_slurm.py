"""launch/submit.py and slurm/: command construction, sweeps, dry-run and pre-submit errors (fast, no Slurm), then
training on a real 2-node Slurm cluster that slurm/dev-cluster.sh starts on this machine (slow; needs root)."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO
from launch import submit as sub

WHICH = shutil.which
SUBMIT = [sys.executable, str(REPO / "launch" / "submit.py")]
DEV_CLUSTER = REPO / "slurm" / "dev-cluster.sh"

# `scontrol show partition -o` / `scontrol show node -o` of the dev cluster (2 nodes, 2 CPUs, 2 fake GPUs each)
PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL Default=YES QoS=N/A "
    "DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO MaxNodes=UNLIMITED "
    "MaxTime=01:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED Nodes=node[1-2] PriorityJobFactor=1 "
    "PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP "
    "TotalCPUs=4 TotalNodes=2 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=4,mem=4000M,node=2,billing=4\n"
    "PartitionName=gpu AllowGroups=ALL Default=NO MaxNodes=4 MaxTime=2-00:00:00 Nodes=g[1-8] State=UP "
    "TotalCPUs=512 TotalNodes=8\n"
)
NODES = "".join(
    f"NodeName={n} Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv={cpus} CPUTot={cpus} CPULoad=2.40 "
    f"AvailableFeatures=(null) ActiveFeatures=(null) Gres={gres} NodeAddr=10.0.0.1 NodeHostName={n} "
    f"Version=22.05.8 OS=Linux 6.18.44 #1 SMP PREEMPT_DYNAMIC @0  RealMemory={mem} AllocMem=0 FreeMem=12575 "
    f"Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A "
    f"Partitions={parts}  BootTime=2026-11-25T03:49:49 CfgTRES=cpu=2,mem=2000M,billing=2 AllocTRES= "
    f"CapWatts=n/a\n"
    for n, cpus, gres, mem, parts in [
        ("node1", 2, "gpu:2", 2000, "debug"), ("node2", 2, "gpu:2", 2000, "debug"),
        *[(f"g{i}", 64, "gpu:a100:8(S:0-1)", 512000, "gpu") for i in range(1, 9)],
    ]
)
MOUNTS = """/dev/vda / ext4 rw,relatime 0 0
tmpfs /dev/shm tmpfs rw 0 0
tmpfs /scratch/local tmpfs rw 0 0
nas:/export/home /home nfs4 rw,vers=4.2 0 0
lustre@tcp:/fs /lustre lustre rw 0 0
"""


@pytest.fixture
def fast_config(tmp_path) -> Path:
    """A config that validates without touching models or data (alias + bundled data)."""
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump({"train": {"max_steps": 5}, "tracking": {"wandb": False}}))
    return path


def spec(**kw) -> sub.RunSpec:
    base = dict(name="r", run_dir="/shared/runs/r", config="/shared/c.yaml", overrides=["--lora.r", "8"], nodes=2,
                python="/venv/bin/python", repo="/repo")
    return sub.RunSpec(**(base | kw))


# ------------------------------------------------------------------------------------------------
# fast: command construction, sweeps, parsing, pre-submit errors, dry-run, signal forwarding


def test_exit_code_matches_the_trainer():
    from ft.distributed import EXIT_PREEMPTED

    assert sub.EXIT_PREEMPTED == EXIT_PREEMPTED


def test_node_commands_cpu_rehearsal_two_nodes():
    s = spec(nodes=2, gpus_per_node=0)
    c0, c1 = (sub.launcher_command(s, r, "node1", 23456) for r in (0, 1))
    assert c0[:3] == ["/venv/bin/python", "-m", "accelerate.commands.launch"]
    for rank, c in enumerate((c0, c1)):
        line = " ".join(c)
        assert "--multi_gpu --num_processes 2 --num_machines 2" in line  # 1 process per node, gloo
        assert f"--machine_rank {rank} --main_process_ip node1 --main_process_port 23456 --rdzv_backend static" in line
        assert line.endswith("/repo/ft/train.py --config /shared/c.yaml --lora.r 8")
    assert c0 != c1


def test_node_commands_gpus_single_node_and_accelerate_config():
    assert "--num_processes 16 --num_machines 2" in " ".join(sub.launcher_command(spec(gpus_per_node=8), 1, "h", 1))
    one = sub.launcher_command(spec(nodes=1), 0, "h", 29999)
    assert "--multi_gpu" not in one and "--machine_rank" not in one and "--num_processes" in one
    four = " ".join(sub.launcher_command(spec(nodes=1, gpus_per_node=4), 0, "h", 29999))
    assert "--multi_gpu --num_processes 4 --num_machines 1 --main_process_port 29999" in four
    ds = sub.launcher_command(spec(gpus_per_node=8, accelerate_config="/a/zero2.yaml",
                                   accelerate_distributed="DEEPSPEED"), 0, "h", 1)
    assert ds[3:5] == ["--config_file", "/a/zero2.yaml"]
    assert "--multi_gpu" not in ds and "--mixed_precision" not in ds  # the config file decides


def test_port_is_deterministic_per_job_and_attempt():
    p = sub.port_for("1234")
    assert p == sub.port_for("1234", 0) and sub.PORT_BASE <= p < sub.PORT_BASE + sub.PORT_SPAN
    assert len({sub.port_for("1234", r) for r in range(5)}) > 1
    assert sub.port_for("77_3") != sub.port_for("77_4") or sub.port_for("77_3", 1) != sub.port_for("77_4", 1)


def test_sweep_expansion_and_names():
    combos = sub.expand_sweep(["lora.r=16,64,128", "train.learning_rate=2e-5,1e-4"])
    assert len(combos) == 6
    assert combos[0] == {"lora.r": "16", "train.learning_rate": "2e-5"}
    assert combos[1] == {"lora.r": "16", "train.learning_rate": "1e-4"}
    assert len({sub.combo_slug(c) for c in combos}) == 6
    assert sub.combo_slug(combos[0]) == "r16-learning_rate2e-5"
    assert sub.expand_sweep(["lora.target_modules=q_proj,v_proj|q_proj"]) == [
        {"lora.target_modules": "q_proj,v_proj"}, {"lora.target_modules": "q_proj"}]
    assert sub.combo_slug({"a.x": "1", "b.x": "2"}) == "a_x1-b_x2"
    for bad in (["lora.r"], ["lora.r="], ["=1,2"], ["lora.r=1,,2"], ["lora.r=1,1"], ["lora.r=1", "lora.r=2"]):
        with pytest.raises(sub.SubmitError):
            sub.expand_sweep(bad)


def test_time_signal_mem_parsing():
    assert [sub.parse_time_minutes(t) for t in ("90", "1:30", "02:00:00", "1-00:00:00", "1-2", "0:00:30")] == [
        90, 2, 120, 1440, 1560, 1]
    assert sub.parse_signal("USR2@90") == ("USR2", 90) and sub.parse_signal("sigusr1@300") == ("USR1", 300)
    assert sub.parse_mem_mb("64G") == 65536 and sub.parse_mem_mb("2000M") == 2000
    for f, bad in ((sub.parse_time_minutes, "1h"), (sub.parse_signal, "B:USR2@90"), (sub.parse_mem_mb, "lots")):
        with pytest.raises(sub.SubmitError):
            f(bad)


@pytest.mark.parametrize("partition,req,pattern", [
    ("nope", sub.Request(1), r"Partition 'nope' does not exist.*partitions: debug, gpu"),
    (None, sub.Request(3), r"--nodes 3 is more than partition 'debug' has \(2 nodes\)"),
    ("gpu", sub.Request(5), r"allows per job \(MaxNodes=4\)"),
    (None, sub.Request(2, gpus_per_node=4), r"--gpus-per-node: 4 GPUs per node is more than partition 'debug'"),
    (None, sub.Request(1, cpus_per_task=8), r"--cpus-per-task: 8 CPUs"),
    (None, sub.Request(1, mem_mb=4096), r"--mem: 4096 MB"),
    (None, sub.Request(1, time_min=61), r"MaxTime=01:00:00"),
])
def test_partition_checks(partition, req, pattern):
    with pytest.raises(sub.SubmitError, match=pattern):
        sub.check_partition(PARTITIONS, NODES, partition, req)


def test_partition_checks_pass():
    assert sub.check_partition(PARTITIONS, NODES, None, sub.Request(2, 2, 2, 2000, 60)) == "debug"
    assert sub.check_partition(PARTITIONS, NODES, "gpu", sub.Request(4, 8, 64, 500000, 2880)) == "gpu"


def test_output_root_rule():
    assert sub.filesystem_of("/home/me/runs", MOUNTS) == ("/home", "nfs4")
    assert sub.check_output_root("/home/me/runs", False, MOUNTS) is None
    assert sub.check_output_root("/lustre/p/runs", False, MOUNTS) is None
    with pytest.raises(sub.SubmitError, match="under /tmp"):
        sub.check_output_root("/tmp/runs", False, MOUNTS)
    with pytest.raises(sub.SubmitError, match="on tmpfs"):
        sub.check_output_root("/scratch/local/runs", False, MOUNTS)
    assert "ext4" in sub.check_output_root("/opt/runs", False, MOUNTS)  # a local disk: a note, not an error
    assert sub.check_output_root("/tmp/runs", True, MOUNTS) is None


def test_accelerate_config_checks(tmp_path):
    pdsh = tmp_path / "ds.yaml"
    pdsh.write_text(yaml.safe_dump({"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 2}}))
    assert sub.accelerate_distributed_type(str(pdsh), 1) == "DEEPSPEED"
    with pytest.raises(sub.SubmitError, match="deepspeed_multinode_launcher: standard"):
        sub.accelerate_distributed_type(str(pdsh), 2)
    for name in ("cpu_ddp.yaml", "zero2.yaml", "zero3.yaml", "multi_gpu.yaml"):
        if (REPO / "accelerate_configs" / name).is_file():
            sub.accelerate_distributed_type(str(REPO / "accelerate_configs" / name), 2)


def run_main(monkeypatch, capsys, argv, cluster=(PARTITIONS, NODES)):
    monkeypatch.setattr(sub, "query_cluster", lambda: cluster)
    monkeypatch.setattr(sub.shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}" if name in (
        "scontrol", "sbatch") else WHICH(name, *a, **k))
    rc = sub.main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_dry_run_prints_sbatch_and_node_commands(monkeypatch, capsys, tmp_path, fast_config):
    root = tmp_path / "runs"
    rc, out, err = run_main(monkeypatch, capsys, [
        "--config", str(fast_config), "--nodes", "2", "--gpus-per-node", "2", "--time", "30", "--mem", "1G",
        "--output-root", str(root), "--allow-local-output", "--run-name", "demo", "--dry-run", "--lora.r", "8"])
    assert rc == 0, err
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --gpus-per-node=2",
                 "#SBATCH --signal=USR2@90", "#SBATCH --requeue", "#SBATCH --time=30", "#SBATCH --partition=debug",
                 "#SBATCH --mem=1024M", "--kill-on-bad-exit=1", "-m submitit.core._submit"):
        assert line in out
    assert f"{root}/demo/submitit/%j_%t_log.out" in out
    nodes = re.findall(r"^node (\d): (.*)$", out, re.M)
    assert [n for n, _ in nodes] == ["0", "1"]
    for rank, cmd in nodes:
        assert f"--num_processes 4 --num_machines 2 --machine_rank {rank} --main_process_ip $HEAD" in cmd
        assert f"--lora.r 8 --train.output_dir {root}/demo --tracking.run_name demo" in cmd
    assert not root.exists()  # nothing written, nothing submitted


def test_dry_run_sweep_is_a_job_array(monkeypatch, capsys, tmp_path, fast_config):
    rc, out, err = run_main(monkeypatch, capsys, [
        "--config", str(fast_config), "--output-root", str(tmp_path), "--allow-local-output", "--run-name", "sw",
        "--sweep", "lora.r=16,64", "train.learning_rate=2e-5,1e-4", "--dry-run"])
    assert rc == 0, err
    assert "#SBATCH --array=0-3%4" in out and f"{tmp_path}/sw/submitit/%A_%a_0_log.out" in out
    runs = re.findall(r"^# run (\S+) -> (\S+)$", out, re.M)
    assert [r for r, _ in runs] == ["sw-r16-learning_rate2e-5", "sw-r16-learning_rate1e-4",
                                    "sw-r64-learning_rate2e-5", "sw-r64-learning_rate1e-4"]
    assert len({d for _, d in runs}) == 4 and all(d.startswith(f"{tmp_path}/sw/") for _, d in runs)
    assert out.count("--tracking.group sw") == 4


def test_python_may_be_a_container_command(monkeypatch, capsys, tmp_path, fast_config):
    rc, out, err = run_main(monkeypatch, capsys, [
        "--config", str(fast_config), "--output-root", str(tmp_path), "--allow-local-output", "--run-name", "c",
        "--python", "env PYTHONNOUSERSITE=1 python3", "--srun-arg=--container-image=nvcr.io#nvidia/pytorch:24.10-py3",
        "--setup", "module load cuda", "--dry-run"])
    assert rc == 0, err
    assert "'--container-image=nvcr.io#nvidia/pytorch:24.10-py3' env PYTHONNOUSERSITE=1 python3 -u -m submitit" in out
    assert "\nmodule load cuda\n" in out
    assert re.search(r"^node 0: env PYTHONNOUSERSITE=1 python3 -m accelerate.commands.launch ", out, re.M)


@pytest.mark.parametrize("extra,pattern", [
    (["--lora.r", "0"], "Config key 'lora.r' has a bad value 0"),
    (["--lora.rank", "8"], "Unknown config key 'lora.rank'. Did you mean 'lora.r'?"),
    (["--sweep", "lora.r=8,0"], "sweep run x-r0: Config key 'lora.r'"),
    (["--train.output_dir", "/x"], "Don't pass --train.output_dir"),
    (["--partition", "big"], "Partition 'big' does not exist"),
    (["--nodes", "4"], "more than partition 'debug' has"),
    (["--gpus-per-node", "8"], "--gpus-per-node: 8 GPUs per node"),
    (["--time", "2:00:00"], "MaxTime"),
    (["--time", "1", "--signal", "USR2@90"], "leaves no time"),
    (["--accelerate-config", "/no/such.yaml"], "does not exist"),
    (["--python", "/no/python"], "not an executable"),
])
def test_errors_before_submitting(monkeypatch, capsys, tmp_path, fast_config, extra, pattern):
    rc, out, err = run_main(monkeypatch, capsys, ["--config", str(fast_config), "--output-root", str(tmp_path),
                                                  "--allow-local-output", "--run-name", "x", "--time", "30", *extra])
    assert rc == 2
    assert pattern in err and err.startswith("error: ") and "Traceback" not in err
    assert not (tmp_path / "x").exists()


def test_output_root_must_be_shared(monkeypatch, capsys, tmp_path, fast_config):
    monkeypatch.delenv("SQLFT_ALLOW_LOCAL_OUTPUT", raising=False)
    rc, _, err = run_main(monkeypatch, capsys, ["--config", str(fast_config), "--output-root", str(tmp_path),
                                                "--nodes", "2", "--time", "30"])
    assert rc == 2 and "not on shared storage" in err and "--allow-local-output" in err


def test_no_slurm_is_a_clear_error(monkeypatch, capsys, tmp_path, fast_config):
    monkeypatch.setattr(sub.shutil, "which", lambda name, *a, **k: None if name in ("scontrol", "sbatch") else
                        WHICH(name, *a, **k))
    rc = sub.main(["--config", str(fast_config), "--output-root", str(tmp_path), "--allow-local-output"])
    assert rc == 2 and "No Slurm here" in capsys.readouterr().err


def test_outcome_decides_requeue():
    usr2, term = signal.SIGUSR2, signal.SIGTERM
    assert sub.Outcome([1], [usr2], True).wants_requeue  # time-limit warning / preemption notice
    assert not sub.Outcome([1], [term], True).wants_requeue  # scancel or Slurm's own requeue / preemption
    assert sub.Outcome([1], [term], True).preempted
    assert sub.Outcome([1], [], True).wants_requeue  # a worker exited 75 on its own
    assert not sub.Outcome([1], [], False).preempted  # a crash: no requeue loop
    assert not sub.Outcome([0], [usr2], False).preempted  # finished anyway


FAKE_LAUNCHER = r'''
import signal, subprocess, sys
# like torchrun: it must ignore the stop signals (inherited), start workers in sessions of their own, report exits
assert signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN and signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
worker = subprocess.Popen([sys.executable, "-c", """
import signal, sys, time
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
print("ready", flush=True)
while not got:
    time.sleep(0.05)
sys.exit(75)
"""], start_new_session=True)
rc = worker.wait()
print(f"exitcode  : {rc} (pid: {worker.pid})", file=sys.stderr, flush=True)
sys.exit(1 if rc else 0)
'''


def test_stop_signal_reaches_workers_in_their_own_session(tmp_path):
    fake = tmp_path / "fake_launcher.py"
    fake.write_text(FAKE_LAUNCHER)
    driver = (f"import json, os, sys; sys.path.insert(0, {str(REPO)!r}); from launch.submit import Launcher, supervise;"
              f"o = supervise([Launcher([sys.executable, {str(fake)!r}], dict(os.environ), '.', [1], [2])]);"
              "print(json.dumps([o.returncodes, o.signals, o.saw_exit75, o.wants_requeue]), flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR2)  # only the supervisor gets it; the worker must still stop
    out, err = proc.communicate(timeout=60)
    assert json.loads(out.strip().splitlines()[-1]) == [[1], [int(signal.SIGUSR2)], True, True], err
    assert "got SIGUSR2" in out


HANGS_AFTER_ADAPTER = r'''
import os, sys, time
run = sys.argv[1]
os.makedirs(run + "/.adapter.tmp")
open(run + "/.adapter.tmp/adapter_model.safetensors", "w").write("x")
os.rename(run + "/.adapter.tmp", run + "/adapter")  # what the trainer does last
time.sleep(300)  # then hangs, like a process-group destroy waiting on a peer that died
'''


def test_launcher_stuck_after_the_adapter_is_killed_and_the_run_counts_as_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(sub, "FINISHED_CHECK_S", 0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter").mkdir()  # an adapter from an earlier attempt does not count
    (run / "adapter" / "adapter_model.safetensors").write_text("old")
    watch = sub.AdapterWatch(run)
    assert not watch()
    script = tmp_path / "hang.py"
    script.write_text(HANGS_AFTER_ADAPTER)
    import shutil as sh

    sh.rmtree(run / "adapter")
    t0 = time.monotonic()
    out = sub.supervise([sub.Launcher([sys.executable, str(script), str(run)], dict(os.environ), ".", [1], [2])],
                        finished=watch, exit_grace_s=1.0)
    assert time.monotonic() - t0 < 30
    assert out.finished and out.ok and not out.preempted and out.returncodes == [-signal.SIGKILL]


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


def write_config(tmp: Path, tiny_model: Path, rows_file: Path, **train) -> Path:
    cfg = {
        "model": {"name_or_path": str(tiny_model), "gradient_checkpointing": False},
        "quantization": {"mode": "none", "dtype": "float32", "compute_dtype": "float32"},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "data": {"source": str(rows_file), "eval_fraction": 0.25, "max_length": 256},
        "train": {"max_steps": 10, "per_device_batch_size": 2, "learning_rate": 1e-2, "warmup_steps": 2,
                  "log_every": 2, "seed": 0} | train,
        "checkpoint": {"every": 0},
        "tracking": {"wandb": False},
        "eval": {"at_end": False},
    }
    path = tmp / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


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


def trace(run_dir: Path) -> dict:
    out = {}
    path = run_dir / "examples.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        rec = json.loads(line)
        out[rec["step"]] = rec["examples"]  # a replayed step after a resume overwrites the interrupted one
    return out


def wait_until(cond, timeout: float, what: str, poll: float = 0.1):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def adapter(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


@pytest.mark.slow
def test_two_nodes_train_and_write_an_adapter(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file)
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
    cfg = write_config(tmp_path, tiny_model, rows_file, max_steps=150, log_every=2)
    # the uninterrupted reference: the same 2 nodes x 1 process, run by --local (no Slurm)
    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "ref"), "--run-name", "ref",
           "--local")
    ref_run = tmp_path / "ref" / "ref"

    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "runs"), "--run-name",
           "pre", "--time", "10", "--tracking.wandb", "true")
    run = tmp_path / "runs" / "pre"
    job = job_of(run)
    wait_until(lambda: len(trace(run)) >= 10, 120, "10 training steps")
    cluster.slurm("scancel", "--signal=USR2", job.job_id)
    resumed = wait_until(lambda: re.findall(r"resumed from \S+ at step (\d+)", logs(run, 0, "err")), 120,
                         "the requeued job to resume")
    first = int(resumed[0])
    wait_until(lambda: max(trace(run), default=0) >= first + 10, 120, "10 more steps after the resume")
    cluster.slurm("scontrol", "requeue", job.job_id)
    [(state, result)] = sub.wait_for([job], timeout_s=240)
    assert state == "COMPLETED", result
    assert result["restarts"] == 2 and result["step"] == 150, result

    steps = [int(s) for s in re.findall(r"resumed from \S+ at step (\d+)", logs(run, 0, "err"))]
    assert len(steps) == 2 and 0 < steps[0] < steps[1] < 150, steps
    assert "got SIGUSR2" in logs(run, 0, "err") and "got SIGTERM" in logs(run, 0, "err")
    assert "restart 1;" in logs(run, 1) and "restart 2;" in logs(run, 1)
    a, b = adapter(ref_run / "adapter"), adapter(run / "adapter")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert trace(ref_run) == trace(run)
    # one W&B run across the three attempts
    ids = {p.name.rsplit("-", 1)[-1] for p in (run / "wandb").glob("offline-run-*")}
    assert len(list((run / "wandb").glob("offline-run-*"))) == 3 and len(ids) == 1, ids


@pytest.mark.slow
def test_sweep_of_two_values_gives_two_runs(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file, max_steps=6)
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

    cfg = write_config(tmp_path, tiny_model, rows_file, max_steps=2000)
    submit(cluster, "--config", str(cfg), "--nodes", "2", "--output-root", str(tmp_path / "runs"), "--run-name",
           "cx", "--time", "10", "--checkpoint.every", "1", "--checkpoint.keep_last", "3")
    run = tmp_path / "runs" / "cx"
    job = job_of(run)
    wait_until(lambda: len(ckpt.complete_checkpoints(run)) >= 2, 120, "two checkpoints")
    cluster.slurm("scancel", job.job_id)  # mid-step or mid-checkpoint
    [(state, result)] = sub.wait_for([job], timeout_s=120)
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
        assert adapter(path / "adapter")
        import torch

        assert torch.load(path / "optimizer.pt", weights_only=False)["state"]
    for other in (run / "checkpoints").iterdir():  # anything else is ignored by resume
        assert other in complete or not ckpt.is_complete(other)


@pytest.mark.slow
def test_presubmit_errors_against_the_cluster(cluster, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"tracking": {"wandb": False}}))
    base = SUBMIT + ["--config", str(cfg), "--output-root", str(tmp_path), "--time", "10", "--dry-run"]
    for extra, pattern in ((["--partition", "gpu"], "Partition 'gpu' does not exist on this cluster; partitions: debug"),
                           (["--nodes", "2", "--gpus-per-node", "3"], "--gpus-per-node: 3 GPUs per node"),
                           (["--nodes", "3"], "--nodes 3 is more than partition 'debug' has (2 nodes)")):
        proc = subprocess.run(base + extra, env=cluster.env, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2 and pattern in proc.stderr, proc.stderr
    ok = subprocess.run(base + ["--nodes", "2", "--gpus-per-node", "2"], env=cluster.env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and "#SBATCH --gpus-per-node=2" in ok.stdout, ok.stderr


@pytest.mark.slow
def test_sbatch_template_checkpoints_and_requeues_on_its_signal(cluster, tiny_model, rows_file, tmp_path):
    cfg = write_config(tmp_path, tiny_model, rows_file, max_steps=80)
    env = {"SQLFT_REPO": str(REPO), "SQLFT_PYTHON": sys.executable, "SQLFT_OUTPUT_ROOT": str(tmp_path / "runs"),
           "SQLFT_RUN_NAME": "sb"}
    job_id = cluster.slurm("sbatch", "--parsable", "--time", "10", f"--output={tmp_path}/sbatch-%j.out",
                           str(REPO / "slurm" / "train.sbatch"), str(cfg), env=env).strip()
    run = tmp_path / "runs" / "sb"
    wait_until(lambda: len(trace(run)) >= 5, 120, "5 training steps")
    cluster.slurm("scancel", "--batch", "--signal=USR2", job_id)  # what --signal=B:USR2@120 sends
    state = wait_until(lambda: (s := cluster.state_of(job_id)) not in ("", "RUNNING", "PENDING", "REQUEUED") and s,
                       180, "the job to end", poll=1)
    batch = (tmp_path / f"sbatch-{job_id}.out").read_text()
    assert state == "COMPLETED", batch
    assert "got USR2" in batch and f"requeueing job {job_id}" in batch and "restart 1" in batch
    node0 = (run / "logs" / f"{job_id}-node0.err").read_text()
    assert re.search(r"resumed from \S+ at step \d+", node0)
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and max(trace(run)) == 80
    assert (run / "checkpoints" / "step-000080" / "rng-rank1.pt").is_file()  # both nodes' ranks
