"""Pure planning of a run: what each node runs, with which environment and port; sweeps; Slurm's time, signal
and memory formats; which device a recipe needs; the sbatch parameters and script.

No subprocess and no Slurm calls here: every function is a function of its arguments (and, for the accelerate
config, of that file), so all of it is tested without a cluster.
"""
from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ft.constants import REPO

PORT_BASE, PORT_SPAN = 20000, 12000  # below Linux's ephemeral range (32768-60999)


class SubmitError(Exception):
    """A problem found before anything is started; the commands print it as `error: ...` and exit 2."""


# ------------------------------------------------------------------------------------------------
# what one node runs


@dataclass
class RunSpec:
    """Everything a node needs to start its part of one run; pickled into the job by submitit."""

    name: str
    run_dir: str
    config: str | None  # None: the library's defaults (a run on your own data or model without --config)
    overrides: list[str]  # training overrides, train.output_dir / tracking.run_name included
    nodes: int
    gpus_per_node: int = 0
    accelerate_config: str | None = None
    accelerate_distributed: str | None = None  # distributed_type of that config file
    python: str = sys.executable  # a shell command: a path, or e.g. "apptainer exec --nv img.sif python3"
    repo: str = str(REPO)
    port: int | None = None
    max_requeues: int = 20
    exit_grace_s: float = 300.0  # after the final adapter is written, how long a launcher may take to exit

    @property
    def procs_per_node(self) -> int:
        return max(self.gpus_per_node, 1)

    @property
    def total_procs(self) -> int:
        return self.nodes * self.procs_per_node


def port_for(job_id: str, restart: int = 0) -> int:
    """The rendezvous port: the same on every node of a job, different after each requeue (no TIME_WAIT clash)."""
    return PORT_BASE + zlib.crc32(f"{job_id}:{restart}".encode()) % PORT_SPAN


def accelerate_args(total_procs: int, nodes: int = 1, *, config_file: str | None = None,
                    distributed: str | None = None, node_rank: int = 0, head: str = "127.0.0.1",
                    port: int | str | None = None) -> list[str]:
    """`accelerate launch`'s own flags for one node: the topology always, precision and compiler only where no
    config file sets them (each flag we leave out is one line of accelerate's "were not passed" warning)."""
    out = ["--config_file", config_file] if config_file else []
    if total_procs > 1 and (distributed or "NO") in ("NO", "MULTI_CPU"):
        out += ["--multi_gpu"]  # DDP; over gloo when there is no GPU (ft/distributed.py's shim)
    out += ["--num_processes", str(total_procs), "--num_machines", str(nodes)]
    if nodes > 1:
        out += ["--machine_rank", str(node_rank), "--main_process_ip", head, "--main_process_port", str(port),
                "--rdzv_backend", "static"]
    elif total_procs > 1 and port is not None:
        out += ["--main_process_port", str(port)]  # jobs sharing a node must not share the default 29500
    if not config_file:
        out += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the recipe sets dtypes itself
    return out


def launcher_command(spec: RunSpec, node_rank: int, head: str, port: int | str,
                     python: list[str] | None = None) -> list[str]:
    """`accelerate launch` for one node of a run (`python`: the interpreter prefix, default spec.python)."""
    train = str(Path(spec.repo) / "ft" / "train.py")
    cmd = [*(python or shlex.split(spec.python)), "-m", "accelerate.commands.launch"]
    cmd += accelerate_args(spec.total_procs, spec.nodes, config_file=spec.accelerate_config,
                           distributed=spec.accelerate_distributed, node_rank=node_rank, head=head, port=port)
    return cmd + [train, *(["--config", spec.config] if spec.config else []), *spec.overrides]


# torchrun handles SIGTERM by killing its workers after 30 s, and SIGINT at once; leave the stop signals blocked in
# it (the supervisor starts it so) and to the workers, which checkpoint and exit, with Slurm's KillWait / GraceTime
# bounding the wait. PET_* is torchrun's --signals_to_handle (which then sets TORCHELASTIC_SIGNALS_TO_HANDLE itself).
LAUNCHER_SIGNALS = {"PET_SIGNALS_TO_HANDLE": "SIGHUP,SIGQUIT", "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGHUP,SIGQUIT"}


def launcher_env(spec: RunSpec, node_rank: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update(LAUNCHER_SIGNALS)
    env.update({"PYTHONUNBUFFERED": "1", "SQLFT_RUN_NAME": spec.name, "SQLFT_NODE_RANK": str(node_rank)})
    # The nodes' python may be a container's, without this package installed: import it from the repository.
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = spec.repo + (os.pathsep + pp if pp else "")
    return env


# ------------------------------------------------------------------------------------------------
# sweeps


def expand_sweep(items: list[str]) -> list[dict[str, str]]:
    """`["lora.r=16,64", "train.learning_rate=2e-5,1e-4"]` -> the 4 combinations, first key varying slowest.

    Values are split on `|` when one is present (for list values: `lora.target_modules=q_proj,v_proj|q_proj`),
    else on `,`.
    """
    axes: list[tuple[str, list[str]]] = []
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not key or not values.strip():
            raise SubmitError(f"--sweep '{item}': expected KEY=V1,V2,... (e.g. lora.r=16,64).")
        split = [v.strip() for v in values.split("|" if "|" in values else ",")]
        if any(not v for v in split):
            raise SubmitError(f"--sweep '{item}': empty value.")
        if any(k == key for k, _ in axes):
            raise SubmitError(f"--sweep: key '{key}' given twice.")
        if len(set(split)) != len(split):
            raise SubmitError(f"--sweep '{item}': repeated value.")
        axes.append((key, split))
    return [dict(zip([k for k, _ in axes], combo)) for combo in itertools.product(*[v for _, v in axes])]


def combo_slug(combo: dict[str, str]) -> str:
    """`{"lora.r": "16", "train.learning_rate": "2e-5"}` -> `r16-learning_rate2e-5` (a folder and run name)."""
    lasts = [k.rsplit(".", 1)[-1] for k in combo]
    parts = []
    for (key, value), last in zip(combo.items(), lasts):
        name = last if lasts.count(last) == 1 else key.replace(".", "_")
        parts.append(name + re.sub(r"[^A-Za-z0-9._+-]+", "_", value).strip("_"))
    return "-".join(parts)


# ------------------------------------------------------------------------------------------------
# Slurm's formats


def parse_time_minutes(text: str) -> int:
    """Slurm time formats: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS -> whole minutes (rounded up)."""
    t = text.strip()
    m = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", t)
    if not m:
        raise SubmitError(f"--time '{text}': use minutes or [D-]HH:MM:SS.")
    days, a, b, c = m.groups()
    if days is not None:  # D-HH[:MM[:SS]]
        secs = int(days) * 86400 + int(a) * 3600 + int(b or 0) * 60 + int(c or 0)
    elif c is not None:  # HH:MM:SS
        secs = int(a) * 3600 + int(b) * 60 + int(c)
    elif b is not None:  # MM:SS
        secs = int(a) * 60 + int(b)
    else:  # MM
        secs = int(a) * 60
    if secs <= 0:
        raise SubmitError(f"--time '{text}' must be positive.")
    return -(-secs // 60)


def parse_signal(text: str) -> tuple[str, int]:
    """`USR2@90` -> ("USR2", 90): the signal Slurm sends the job that many seconds before its time limit."""
    m = re.fullmatch(r"(?:SIG)?(USR1|USR2|TERM|INT|URG)(?:@(\d+))?", text.strip().upper())
    if not m:
        raise SubmitError(f"--signal '{text}': expected USR1, USR2 or TERM, optionally @SECONDS (e.g. USR2@90). "
                          "(B: would signal the batch shell only, not the training processes.)")
    return m.group(1), int(m.group(2) or 90)


def budget_from_time_limit(time_min: int, signal_delay_s: int) -> tuple[float, str]:
    """(train.max_minutes, what it leaves out) for a run that should finish on its own within the job's time limit:
    the limit, less the stop signal's lead (the signal asks a run to checkpoint and requeue: the plan ends before
    it) and a margin for what the budget's clock doesn't see (the job's start: sbatch, srun, a container, the
    launcher): 5 % of the limit, at least 2 minutes. The final checkpoint and evaluation are inside the budget (the
    planner counts them). A requeued attempt keeps the first attempt's plan (its checkpoint holds it)."""
    margin = max(2.0, 0.05 * time_min)
    budget = round(time_min - signal_delay_s / 60 - margin, 1)
    if budget < 1:
        raise SubmitError(f"--time-budget auto: a {time_min} min limit less {signal_delay_s} s before the stop signal "
                          f"and a {margin:g} min margin for the job's start leaves no time to train; give a longer "
                          "--time.")
    return budget, (f"the {time_min} min limit less {signal_delay_s} s before the stop signal and {margin:g} min for "
                    "the job's start")


def parse_mem_mb(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip().upper())
    if not m:
        raise SubmitError(f"--mem '{text}': expected e.g. 64G or 2000M (per node).")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return int(float(m.group(1)) * scale)


# ------------------------------------------------------------------------------------------------
# which device a run needs


def read_accelerate_config(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SubmitError(f"--accelerate-config '{path}' does not exist.")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise SubmitError(f"--accelerate-config '{path}' is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise SubmitError(f"--accelerate-config '{path}' must hold a mapping.")
    return data


def accelerate_on_gpu(data: dict) -> bool | None:
    """True: the accelerate config runs on GPUs; False: on CPUs (`use_cpu: true`); None: it doesn't say."""
    if data.get("use_cpu") is True:
        return False
    if data.get("use_cpu") is False or str(data.get("distributed_type", "NO")).upper() in ("MULTI_GPU", "DEEPSPEED"):
        return True
    return None


def gpu_reasons(cfg) -> list[str]:
    """The training config's settings that only run on CUDA GPUs (empty: it runs on CPUs too)."""
    out = []
    if cfg.train.optimizer == "paged_adamw_8bit":
        out.append("train.optimizer paged_adamw_8bit")
    if cfg.quantization.mode == "8bit":
        out.append("quantization.mode 8bit")
    if cfg.model.attn_implementation == "flash_attention_2":
        out.append("model.attn_implementation flash_attention_2")
    return out


def resolve_gpus(requested: int | None, cpu: bool, cfg, accel: dict | None, accel_name: str | None,
                 nodes: int) -> tuple[int, str | None]:
    """(GPUs per node, a note for the user): the count given, or the one the accelerate config implies, or 0 for a
    recipe that runs on CPUs; a GPU recipe without GPUs, and contradictory requests, are errors."""
    on_gpu = accelerate_on_gpu(accel) if accel is not None else None
    reasons = gpu_reasons(cfg)
    if cpu:
        if requested:
            raise SubmitError(f"--cpu and --gpus-per-node {requested} contradict each other: give one of them.")
        if on_gpu:
            variant = Path(accel_name).with_name("cpu_" + Path(accel_name).name.replace("multi_gpu", "ddp"))
            hint = f" (its CPU variant: {variant})" if variant.is_file() else " (use_cpu: true)"
            raise SubmitError(f"--cpu with --accelerate-config {accel_name}, a GPU config: use a CPU config{hint}.")
        note = None
        if reasons:
            note = (f"note: --cpu rehearsal of a GPU recipe ({', '.join(reasons)}): override what CPUs can't run "
                    f"(e.g. --train.optimizer adamw).")
        return 0, note
    if requested is not None:
        if requested < 0:
            raise SubmitError("--gpus-per-node must be >= 0.")
        if requested and on_gpu is False:
            raise SubmitError(f"--gpus-per-node {requested} with --accelerate-config {accel_name}, a CPU config "
                              f"(use_cpu: true): use its GPU variant, or --cpu without GPUs.")
        if requested == 0 and (on_gpu or reasons):
            why = ", ".join(reasons + ([f"accelerate config {accel_name}"] if on_gpu else []))
            raise SubmitError(f"--gpus-per-node 0 for a GPU recipe ({why}): ask for GPUs, or pass --cpu to "
                              f"rehearse it on CPUs.")
        return requested, None
    if on_gpu:
        # The shipped GPU configs describe one node (num_machines 1): its processes are that node's GPUs.
        per_node = int(accel.get("num_processes") or 1) // max(int(accel.get("num_machines") or 1), 1)
        return max(per_node, 1), (f"note: --gpus-per-node {max(per_node, 1)} (num_processes of {accel_name}); "
                                  f"pass --gpus-per-node to change it.")
    if reasons:
        raise SubmitError(f"this is a GPU recipe ({', '.join(reasons)}): pass --gpus-per-node N, or --cpu to "
                          f"rehearse it on CPUs.")
    # A recipe that runs on CPUs, without GPUs asked for: a CPU run. Said once, unless a CPU accelerate config
    # already says so.
    note = None if on_gpu is False else (
        f"note: no GPUs requested: {nodes} node(s) x 1 CPU process (gloo); pass --gpus-per-node N to train on "
        f"GPUs (or --cpu to say that a CPU run is meant).")
    return 0, note


# ------------------------------------------------------------------------------------------------
# the plan and its sbatch script


@dataclass
class Plan:
    specs: list[RunSpec]
    sweep_dir: Path | None  # the sweep's folder (holds the array's submitit folder)
    job_name: str
    params: dict = field(default_factory=dict)  # SlurmExecutor parameters
    notes: list[str] = field(default_factory=list)

    @property
    def submitit_dir(self) -> Path:
        return (self.sweep_dir or Path(self.specs[0].run_dir)) / "submitit"


def sbatch_params(*, job_name: str, nodes: int, gpus_per_node: int, time_min: int, signal: str, signal_delay_s: int,
                  partition: str | None = None, account: str | None = None, qos: str | None = None,
                  cpus_per_task: int | None = None, mem_mb: int | None = None, constraint: str | None = None,
                  exclusive: bool = False, setup: list[str] = (), srun_args: list[str] = (),
                  repo: str = str(REPO)) -> dict:
    """submitit's SlurmExecutor parameters: one task per node, requeue on the signal, the resources asked for."""
    # A node that crashes ends the job at once (instead of the others waiting for a collective's timeout); a node
    # that stopped for preemption exits 0, so it does not cut the others short.
    srun = ["--kill-on-bad-exit=1"]
    if cpus_per_task:
        srun.append(f"--cpus-per-task={cpus_per_task}")  # Slurm 22.05+ srun doesn't inherit it
    params: dict = {
        "job_name": job_name, "nodes": nodes, "ntasks_per_node": 1, "time": time_min,
        "signal_delay_s": signal_delay_s, "srun_args": srun + list(srun_args),
        "setup": [f"export PYTHONPATH={shlex.quote(repo)}${{PYTHONPATH:+:$PYTHONPATH}}", *setup],
        "additional_parameters": {"signal": f"{signal}@{signal_delay_s}", "requeue": True},
    }
    for key, value in (("partition", partition), ("account", account), ("qos", qos),
                       ("cpus_per_task", cpus_per_task), ("constraint", constraint)):
        if value:
            params[key] = value
    if mem_mb:
        params["mem"] = f"{mem_mb}M"
    if exclusive:
        params["exclusive"] = True
    if gpus_per_node:
        params["gpus_per_node"] = gpus_per_node
    return params


def submitit_command(python: str, folder: Path) -> str:
    return f"{python} -u -m submitit.core._submit {shlex.quote(str(folder))}"


def sbatch_script(p: Plan) -> str:
    from submitit.slurm.slurm import _make_sbatch_string

    params = dict(p.params)
    if len(p.specs) > 1:
        params["map_count"] = len(p.specs)
    return _make_sbatch_string(command=submitit_command(p.specs[0].python, p.submitit_dir), folder=p.submitit_dir,
                               **params)


def node_commands(spec: RunSpec) -> list[str]:
    port = str(spec.port) if spec.port else "$PORT"
    return [shlex.join(launcher_command(spec, r, "HEADX", "PORTX")).replace("HEADX", "$HEAD").replace("PORTX", port)
            for r in range(spec.nodes)]


def describe_nodes(spec: RunSpec) -> str:
    lines = [f"# run {spec.name} -> {spec.run_dir}"]
    for r, cmd in enumerate(node_commands(spec)):
        lines.append(f"node {r}: {cmd}")
    return "\n".join(lines)


PORT_NOTE = (f"# HEAD = first host of $SLURM_JOB_NODELIST (scontrol show hostnames); PORT = {PORT_BASE} + "
             f"crc32('<job id>:<restart count>') % {PORT_SPAN}; each node runs its line as task $SLURM_NODEID.")
