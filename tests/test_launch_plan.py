"""launch/plan.py, launch/slurm.py's pre-flight checks and launch/submit.py's command: per-node commands, sweeps,
Slurm's formats, partition / storage / accelerate-config checks, the GPU request, dry runs and the errors reported
before anything is submitted. Fast: no Slurm, no torch, no training."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from launch import plan, slurm
from launch import submit as sub

WHICH = shutil.which

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


def spec(**kw) -> plan.RunSpec:
    base = dict(name="r", run_dir="/shared/runs/r", config="/shared/c.yaml", overrides=["--lora.r", "8"], nodes=2,
                python="/venv/bin/python", repo="/repo")
    return plan.RunSpec(**(base | kw))


# ------------------------------------------------------------------------------------------------
# fast: command construction, sweeps, parsing, pre-submit errors, dry-run, signal forwarding


def test_node_commands_cpu_rehearsal_two_nodes():
    s = spec(nodes=2, gpus_per_node=0)
    c0, c1 = (plan.launcher_command(s, r, "node1", 23456) for r in (0, 1))
    assert c0[:3] == ["/venv/bin/python", "-m", "accelerate.commands.launch"]
    for rank, c in enumerate((c0, c1)):
        line = " ".join(c)
        assert "--multi_gpu --num_processes 2 --num_machines 2" in line  # 1 process per node, gloo
        assert f"--machine_rank {rank} --main_process_ip node1 --main_process_port 23456 --rdzv_backend static" in line
        assert line.endswith("/repo/ft/train.py --config /shared/c.yaml --lora.r 8")
    assert c0 != c1


def test_node_commands_gpus_single_node_and_accelerate_config():
    assert "--num_processes 16 --num_machines 2" in " ".join(plan.launcher_command(spec(gpus_per_node=8), 1, "h", 1))
    one = plan.launcher_command(spec(nodes=1), 0, "h", 29999)
    assert "--multi_gpu" not in one and "--machine_rank" not in one and "--num_processes" in one
    four = " ".join(plan.launcher_command(spec(nodes=1, gpus_per_node=4), 0, "h", 29999))
    assert "--multi_gpu --num_processes 4 --num_machines 1 --main_process_port 29999" in four
    ds = plan.launcher_command(spec(gpus_per_node=8, accelerate_config="/a/zero2.yaml",
                                   accelerate_distributed="DEEPSPEED"), 0, "h", 1)
    assert ds[3:5] == ["--config_file", "/a/zero2.yaml"]
    assert "--multi_gpu" not in ds and "--mixed_precision" not in ds  # the config file decides


def test_port_is_deterministic_per_job_and_attempt():
    p = plan.port_for("1234")
    assert p == plan.port_for("1234", 0) and plan.PORT_BASE <= p < plan.PORT_BASE + plan.PORT_SPAN
    assert len({plan.port_for("1234", r) for r in range(5)}) > 1
    assert plan.port_for("77_3") != plan.port_for("77_4") or plan.port_for("77_3", 1) != plan.port_for("77_4", 1)


def test_sweep_expansion_and_names():
    combos = plan.expand_sweep(["lora.r=16,64,128", "train.learning_rate=2e-5,1e-4"])
    assert len(combos) == 6
    assert combos[0] == {"lora.r": "16", "train.learning_rate": "2e-5"}
    assert combos[1] == {"lora.r": "16", "train.learning_rate": "1e-4"}
    assert len({plan.combo_slug(c) for c in combos}) == 6
    assert plan.combo_slug(combos[0]) == "r16-learning_rate2e-5"
    assert plan.expand_sweep(["lora.target_modules=q_proj,v_proj|q_proj"]) == [
        {"lora.target_modules": "q_proj,v_proj"}, {"lora.target_modules": "q_proj"}]
    assert plan.combo_slug({"a.x": "1", "b.x": "2"}) == "a_x1-b_x2"
    for bad in (["lora.r"], ["lora.r="], ["=1,2"], ["lora.r=1,,2"], ["lora.r=1,1"], ["lora.r=1", "lora.r=2"]):
        with pytest.raises(plan.SubmitError):
            plan.expand_sweep(bad)


def test_time_signal_mem_parsing():
    assert [plan.parse_time_minutes(t) for t in ("90", "1:30", "02:00:00", "1-00:00:00", "1-2", "0:00:30")] == [
        90, 2, 120, 1440, 1560, 1]
    assert plan.parse_signal("USR2@90") == ("USR2", 90) and plan.parse_signal("sigusr1@300") == ("USR1", 300)
    assert plan.parse_mem_mb("64G") == 65536 and plan.parse_mem_mb("2000M") == 2000
    for f, bad in ((plan.parse_time_minutes, "1h"), (plan.parse_signal, "B:USR2@90"), (plan.parse_mem_mb, "lots")):
        with pytest.raises(plan.SubmitError):
            f(bad)


@pytest.mark.parametrize("partition,req,pattern", [
    ("nope", slurm.Request(1), r"Partition 'nope' does not exist.*partitions: debug, gpu"),
    (None, slurm.Request(3), r"--nodes 3 is more than partition 'debug' has \(2 nodes\)"),
    ("gpu", slurm.Request(5), r"allows per job \(MaxNodes=4\)"),
    (None, slurm.Request(2, gpus_per_node=4), r"--gpus-per-node: 4 GPUs per node is more than partition 'debug'"),
    (None, slurm.Request(1, cpus_per_task=8), r"--cpus-per-task: 8 CPUs"),
    (None, slurm.Request(1, mem_mb=4096), r"--mem: 4096 MB"),
    (None, slurm.Request(1, time_min=61), r"MaxTime=01:00:00"),
])
def test_partition_checks(partition, req, pattern):
    with pytest.raises(plan.SubmitError, match=pattern):
        slurm.check_partition(PARTITIONS, NODES, partition, req)


def test_partition_checks_pass():
    assert slurm.check_partition(PARTITIONS, NODES, None, slurm.Request(2, 2, 2, 2000, 60)) == "debug"
    assert slurm.check_partition(PARTITIONS, NODES, "gpu", slurm.Request(4, 8, 64, 500000, 2880)) == "gpu"


def test_output_root_rule():
    assert slurm.filesystem_of("/home/me/runs", MOUNTS) == ("/home", "nfs4")
    assert slurm.check_output_root("/home/me/runs", False, MOUNTS) is None
    assert slurm.check_output_root("/lustre/p/runs", False, MOUNTS) is None
    with pytest.raises(plan.SubmitError, match="under /tmp"):
        slurm.check_output_root("/tmp/runs", False, MOUNTS)
    with pytest.raises(plan.SubmitError, match="on tmpfs"):
        slurm.check_output_root("/scratch/local/runs", False, MOUNTS)
    assert "ext4" in slurm.check_output_root("/opt/runs", False, MOUNTS)  # a local disk: a note, not an error
    assert slurm.check_output_root("/tmp/runs", True, MOUNTS) is None


def test_accelerate_config_checks(tmp_path):
    pdsh = tmp_path / "ds.yaml"
    pdsh.write_text(yaml.safe_dump({"distributed_type": "DEEPSPEED", "deepspeed_config": {"zero_stage": 2}}))
    assert slurm.accelerate_distributed_type(str(pdsh), 1) == "DEEPSPEED"
    with pytest.raises(plan.SubmitError, match="deepspeed_multinode_launcher: standard"):
        slurm.accelerate_distributed_type(str(pdsh), 2)
    for name in ("cpu_ddp.yaml", "zero2.yaml", "zero3.yaml", "multi_gpu.yaml"):
        if (REPO / "accelerate_configs" / name).is_file():
            slurm.accelerate_distributed_type(str(REPO / "accelerate_configs" / name), 2)


def run_main(monkeypatch, capsys, argv, cluster=(PARTITIONS, NODES)):
    monkeypatch.setattr(slurm, "query_cluster", lambda: cluster)
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




# ------------------------------------------------------------------------------------------------
# the default config, the GPU request, the launcher's own flags, no torch


def test_dry_run_without_config_uses_the_default_config(monkeypatch, capsys, tmp_path):
    from ft.constants import DEFAULT_CONFIG

    rc, out, err = run_main(monkeypatch, capsys, ["--nodes", "2", "--dry-run", "--output-root", str(tmp_path),
                                                  "--allow-local-output", "--run-name", "d", "--time", "30"])
    assert rc == 0, err
    nodes = re.findall(r"^node (\d): (.*)$", out, re.M)
    assert len(nodes) == 2 and all(f"--config {DEFAULT_CONFIG} " in cmd for _, cmd in nodes)
    assert "no GPUs requested" in err  # the demo runs on CPUs: said, not silent


@pytest.fixture
def gpu_recipe(tmp_path) -> Path:
    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump({"train": {"optimizer": "paged_adamw_8bit"}, "tracking": {"wandb": False}}))
    return path


def dry_run(monkeypatch, capsys, tmp_path, config, *extra):
    return run_main(monkeypatch, capsys, ["--config", str(config), "--output-root", str(tmp_path),
                                          "--allow-local-output", "--run-name", "g", "--time", "30", "--dry-run",
                                          *extra])


def test_gpu_recipe_without_gpus_is_an_error_unless_cpu_rehearsal(monkeypatch, capsys, tmp_path, gpu_recipe):
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, gpu_recipe)
    assert rc == 2 and err.startswith("error: ") and "GPU recipe (train.optimizer paged_adamw_8bit)" in err
    assert "--gpus-per-node N, or --cpu" in err and not out
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, gpu_recipe, "--gpus-per-node", "0")
    assert rc == 2 and "--gpus-per-node 0 for a GPU recipe" in err
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, gpu_recipe, "--cpu")
    assert rc == 0, err
    assert "#SBATCH --gpus-per-node" not in out and "--num_processes 1 --num_machines 1" in out
    assert "--cpu rehearsal of a GPU recipe" in err
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, gpu_recipe, "--partition", "gpu", "--gpus-per-node", "8")
    assert rc == 0, err
    assert "#SBATCH --gpus-per-node=8" in out and "--num_processes 8 --num_machines 1" in out


def test_gpu_accelerate_config_gives_the_gpu_count(monkeypatch, capsys, tmp_path, fast_config):
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, fast_config, "--partition", "gpu", "--nodes", "2",
                           "--accelerate-config", str(REPO / "accelerate_configs" / "multi_gpu.yaml"))
    assert rc == 0, err
    assert "#SBATCH --gpus-per-node=8" in out and "--num_processes 16 --num_machines 2" in out
    assert "--gpus-per-node 8 (num_processes of" in err


@pytest.mark.parametrize("extra,pattern", [
    (["--cpu", "--gpus-per-node", "2"], "--cpu and --gpus-per-node 2 contradict each other"),
    (["--gpus-per-node", "2", "--accelerate-config", "accelerate_configs/cpu_ddp.yaml"],
     "a CPU config (use_cpu: true)"),
    (["--cpu", "--accelerate-config", "accelerate_configs/zero2.yaml"],
     "its CPU variant: accelerate_configs/cpu_zero2"),
    (["--cpu", "--accelerate-config", "accelerate_configs/multi_gpu.yaml"], "accelerate_configs/cpu_ddp.yaml"),
    (["--gpus-per-node", "0", "--accelerate-config", "accelerate_configs/zero3.yaml"], "for a GPU recipe"),
])
def test_contradictory_device_requests_are_refused(monkeypatch, capsys, tmp_path, fast_config, extra, pattern):
    monkeypatch.chdir(REPO)
    rc, out, err = dry_run(monkeypatch, capsys, tmp_path, fast_config, *extra)
    assert rc == 2 and err.startswith("error: ") and pattern in err, err
    assert not out


def test_a_mistyped_launcher_flag_suggests_the_launcher_flag(capsys, fast_config):
    with pytest.raises(SystemExit) as e:
        sub.main(["--config", str(fast_config), "--nodez", "2", "--dry-run"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "Did you mean --nodes?" in err
    assert "lora.r" not in err and "train.learning_rate" not in err  # not the list of training keys


def test_launch_imports_no_torch():
    code = ("import sys; import launch.submit, launch.local, launch.plan, launch.slurm, launch.supervisor; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'accelerate', 'transformers')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


@pytest.mark.parametrize("how", [["launch/submit.py"], ["-m", "launch.submit"]])
def test_submit_runs_as_a_script_and_as_a_module(how, tmp_path):
    """No sys.path edits: the installed package is imported either way (and submitit pickles
    launch.supervisor.NodeTask, never a class of __main__)."""
    proc = subprocess.run([sys.executable, *how, "--help"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0 and "--gpus-per-node" in proc.stdout and "--cpu" in proc.stdout, proc.stderr
    from launch import supervisor

    assert sub.NodeTask is supervisor.NodeTask and supervisor.NodeTask.__module__ == "launch.supervisor"
