"""Submit a training run (or a sweep) to Slurm through submitit: one task per node, each running `accelerate launch`.

    python launch/submit.py --nodes 2 --gpus-per-node 8 --config configs/llama3.1-8b.yaml \
        --accelerate-config accelerate_configs/zero2.yaml --partition gpu --time 24:00:00 [--lora.r 64 ...]
    python launch/submit.py ... --sweep lora.r=16,64,128 train.learning_rate=2e-5,1e-4   # a job array
    python launch/submit.py ... --dry-run      # print the sbatch script and the per-node commands
    python launch/submit.py ... --local        # the same commands on this machine, no Slurm

Everything of a run lands under `<output-root>/<run-name>/`: checkpoints, adapter, metrics (the trainer's
`--train.output_dir`), `submitit/` (sbatch script, stdout / stderr per node), `command.txt` and `job.json`.

How a job runs (see slurm/README.md):
- Rendezvous: task k of the job runs on node k; it starts `accelerate launch --num_machines N --machine_rank
  $SLURM_NODEID --main_process_ip <first host of $SLURM_JOB_NODELIST> --main_process_port <port>
  --rdzv_backend static`, with N x G processes in all (1 per node over gloo when G = 0). The port is derived
  from the job id and restart count, so every node computes the same one without talking to the others.
- Preemption / time limit: sbatch asks for `--signal=USR2@90` (`--signal`) and `--requeue`. Slurm signals every
  process of the job; the trainer finishes its step, checkpoints and exits 75. The launcher (torchrun) is told to
  ignore these signals so it waits for its workers, and this task forwards them to the workers again (every 10 s
  until they exit, so a signal that lands while a worker is still loading is not lost). After a USR1 / USR2 (or a
  worker's exit 75) the task of node 0 runs `scontrol requeue`; after a SIGTERM Slurm itself decides (it
  requeues a preempted job, a cancelled one stays cancelled). The requeued job runs the same command, and the
  trainer resumes from the newest complete checkpoint, continuing the same W&B run.
"""
from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the package from the repo, so submitit pickles by reference
    _repo = str(Path(__file__).resolve().parents[1])
    sys.path[:] = [_repo] + [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

REPO = Path(__file__).resolve().parents[1]
EXIT_PREEMPTED = 75  # == ft.distributed.EXIT_PREEMPTED (not imported: it would import torch into this CLI)
PORT_BASE, PORT_SPAN = 20000, 12000  # below Linux's ephemeral range (32768-60999)
FORWARD_EVERY_S = 10.0
FINISHED_CHECK_S = 5.0
# What the launchers print when a worker exited 75: torchrun's failure report, accelerate's simple launcher.
_EXIT75 = re.compile(rb"exitcode\s*:\s*75\b|exit status 75\b")
SHARED_FS = {"nfs", "nfs4", "lustre", "gpfs", "beegfs", "ceph", "cephfs", "cifs", "smb3", "glusterfs", "wekafs",
             "panfs", "pvfs2", "orangefs", "afs", "9p", "virtiofs", "vast", "davfs", "quobyte"}
LOCAL_ONLY_FS = {"tmpfs", "ramfs", "devtmpfs", "overlay", "squashfs", "zram"}
LOCAL_ONLY_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run")


class SubmitError(Exception):
    """A problem found before anything is submitted; main() prints it as `error: ...` and exits 2."""


# ------------------------------------------------------------------------------------------------
# what one node runs


@dataclass
class RunSpec:
    """Everything a node needs to start its part of one run; pickled into the job by submitit."""

    name: str
    run_dir: str
    config: str
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


def launcher_command(spec: RunSpec, node_rank: int, head: str, port: int | str,
                     python: list[str] | None = None) -> list[str]:
    """`accelerate launch` for one node of a run (`python`: the interpreter prefix, default spec.python)."""
    train = str(Path(spec.repo) / "ft" / "train.py")
    cmd = [*(python or shlex.split(spec.python)), "-m", "accelerate.commands.launch"]
    if spec.accelerate_config:
        cmd += ["--config_file", spec.accelerate_config]
    distributed = spec.accelerate_distributed or "NO"
    if spec.total_procs > 1 and distributed in ("NO", "MULTI_CPU"):
        cmd += ["--multi_gpu"]  # DDP; over gloo when there is no GPU (ft/distributed.py's shim)
    cmd += ["--num_processes", str(spec.total_procs), "--num_machines", str(spec.nodes)]
    if spec.nodes > 1:
        cmd += ["--machine_rank", str(node_rank), "--main_process_ip", head, "--main_process_port", str(port),
                "--rdzv_backend", "static"]
    elif spec.total_procs > 1:
        cmd += ["--main_process_port", str(port)]  # jobs sharing a node must not share the default 29500
    if not spec.accelerate_config:
        cmd += ["--mixed_precision", "no", "--dynamo_backend", "no"]  # the recipe sets dtypes itself
    return cmd + [train, "--config", spec.config, *spec.overrides]


def launcher_env(spec: RunSpec, node_rank: int, base: dict | None = None) -> dict:
    env = dict(os.environ if base is None else base)
    env.update({
        # torchrun handles SIGTERM by killing its workers after 30 s; leave SIGTERM to the workers instead (they
        # checkpoint and exit) and let Slurm's KillWait / GraceTime bound the wait. PET_* is torchrun's
        # --signals_to_handle (which then sets TORCHELASTIC_SIGNALS_TO_HANDLE itself).
        "PET_SIGNALS_TO_HANDLE": "SIGINT,SIGHUP,SIGQUIT",
        "TORCHELASTIC_SIGNALS_TO_HANDLE": "SIGINT,SIGHUP,SIGQUIT",
        "PYTHONUNBUFFERED": "1",
        "SQLFT_RUN_NAME": spec.name,
        "SQLFT_NODE_RANK": str(node_rank),
    })
    pp = env.get("PYTHONPATH")
    env["PYTHONPATH"] = spec.repo + (os.pathsep + pp if pp else "")
    return env


def _launcher_preexec() -> None:
    # Inherited by the launcher and its workers: the launcher survives the USR signals Slurm sends to every process
    # of the job, and ignores SIGTERM (see launcher_env). The trainer installs its own handlers for all three.
    for s in (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(s, signal.SIG_IGN)


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if len(fields) > 1 and int(fields[1]) == pid:
            out.append(int(entry))
    return out


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            n = os.write(fd, data)
        except OSError:
            return
        data = data[n:]


class Launcher:
    """One `accelerate launch` process: its output copied to sinks (and scanned for a worker's exit 75)."""

    def __init__(self, cmd: list[str], env: dict, cwd: str, out_fds: list[int], err_fds: list[int]):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.out_fds, self.err_fds = out_fds, err_fds
        self.proc: subprocess.Popen | None = None
        self.saw_exit75 = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True,
                                     preexec_fn=_launcher_preexec)
        for src, sinks in ((self.proc.stdout, self.out_fds), (self.proc.stderr, self.err_fds)):
            t = threading.Thread(target=self._pump, args=(src, sinks), daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, src, sinks: list[int]) -> None:
        tail = b""
        fd = src.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            for sink in sinks:
                _write_all(sink, chunk)
            tail = tail[-200:] + chunk
            if _EXIT75.search(tail):
                self.saw_exit75 = True

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int) -> None:
        """To the launcher and its workers (torchrun starts each worker in a session of its own)."""
        if not self.running():
            return
        for pid in [self.proc.pid, *_children(self.proc.pid)]:
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def kill(self) -> None:
        if self.proc is None:
            return
        kids = _children(self.proc.pid) if self.running() else []
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def wait(self) -> int:
        rc = self.proc.wait()
        for t in self._threads:
            t.join(timeout=10)
        return rc


@dataclass
class Outcome:
    returncodes: list[int]
    signals: list[int]  # stop signals this process received, in order
    saw_exit75: bool
    finished: bool = False  # the run's final adapter was written during this attempt

    @property
    def ok(self) -> bool:
        """Training completed: every launcher exited 0, or the final adapter exists whatever happened after it
        (a process that crashes or hangs in teardown, after the work is saved, doesn't fail the run)."""
        return self.finished or all(rc == 0 for rc in self.returncodes)

    @property
    def preempted(self) -> bool:
        return not self.ok and (bool(self.signals) or self.saw_exit75)

    @property
    def wants_requeue(self) -> bool:
        """USR1/USR2 (Slurm's warning ahead of the time limit, or a preemption notice) ask us to requeue; after a
        SIGTERM Slurm decides itself (it requeues a preempted job, a cancelled one stays cancelled)."""
        if not self.preempted:
            return False
        usr = {signal.SIGUSR1, signal.SIGUSR2}
        return any(s in usr for s in self.signals) or (self.saw_exit75 and signal.SIGTERM not in self.signals)


class AdapterWatch:
    """Has the run's final adapter been (re)written since this attempt started? `<run>/adapter` is renamed into
    place as the trainer's last write, so its inode change time moves; compared with the value seen at the start,
    not with this host's clock (shared filesystems keep their own)."""

    def __init__(self, run_dir: str | Path):
        self.path = Path(run_dir) / "adapter"
        self.initial = self._stamp()

    def _stamp(self) -> tuple | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return (st.st_ino, st.st_ctime_ns)

    def __call__(self) -> bool:
        now = self._stamp()
        return now is not None and now != self.initial and (self.path / "adapter_model.safetensors").is_file()


def supervise(launchers: list[Launcher], log=print, finished=None, exit_grace_s: float = 300.0) -> Outcome:
    """Start the launchers and wait for them, forwarding stop signals to the training processes.

    SIGTERM / USR1 / USR2 are passed on as they are, SIGINT (Ctrl-C, --local) as SIGTERM; the last one is sent
    again every FORWARD_EVERY_S seconds until the launchers exit. A second Ctrl-C kills everything.
    `finished()` (checked every FINISHED_CHECK_S seconds) says the run's final output is written; launchers still running
    `exit_grace_s` later are stuck in teardown (a process-group destroy waiting on a peer that died) and killed.
    """
    received: list[int] = []
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in handled}
    try:
        for launcher in launchers:
            launcher.start()
        seen, last_sent, stop_sig, interrupts = 0, 0.0, None, 0
        last_check, done_at = 0.0, None
        while any(launcher.running() for launcher in launchers):
            now = time.monotonic()
            if finished is not None and done_at is None and now - last_check >= FINISHED_CHECK_S:
                last_check = now
                if finished():
                    done_at = now
            if done_at is not None and now - done_at >= exit_grace_s:
                log(f"[sqlft] the run's adapter was written {exit_grace_s:.0f} s ago but the launcher has not "
                    f"exited (stuck in teardown?): stopping it")
                for launcher in launchers:
                    launcher.kill()
                break
            if len(received) > seen:
                for s in received[seen:]:
                    interrupts += s == signal.SIGINT
                    stop_sig = signal.SIGTERM if s == signal.SIGINT else s
                    log(f"[sqlft] got {signal.Signals(s).name}: asking the training processes to checkpoint and stop")
                seen = len(received)
                if interrupts >= 2:
                    log("[sqlft] second interrupt: killing the training processes")
                    for launcher in launchers:
                        launcher.kill()
                for launcher in launchers:
                    launcher.send(stop_sig)
                last_sent = now
            elif stop_sig is not None and now - last_sent >= FORWARD_EVERY_S:
                for launcher in launchers:
                    launcher.send(stop_sig)
                last_sent = now
            time.sleep(0.2)
        rcs = [launcher.wait() for launcher in launchers]
    finally:
        for launcher in launchers:
            if launcher.running():
                launcher.kill()
        for s, h in old.items():
            signal.signal(s, h)
    stops = [s for s in received if s != signal.SIGINT] + ([signal.SIGTERM] if signal.SIGINT in received else [])
    done = finished is not None and finished()
    return Outcome(rcs, stops, any(launcher.saw_exit75 for launcher in launchers), done)


def head_node(nodelist: str) -> str:
    """First host of a Slurm node list (`node[1-2]` -> node1), as `scontrol show hostnames` expands it."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    from submitit.slurm.slurm import _parse_node_list

    return _parse_node_list(nodelist)[0]


@dataclass
class NodeEnv:
    node_rank: int
    num_nodes: int
    head: str
    job_id: str  # what scontrol requeue takes: <id> or <array id>_<index>
    restart: int
    host: str

    @classmethod
    def from_slurm(cls, environ=os.environ) -> "NodeEnv":
        array = environ.get("SLURM_ARRAY_JOB_ID")
        job_id = f"{array}_{environ['SLURM_ARRAY_TASK_ID']}" if array else environ["SLURM_JOB_ID"]
        return cls(node_rank=int(environ.get("SLURM_NODEID", 0)), num_nodes=int(environ.get("SLURM_JOB_NUM_NODES", 1)),
                   head=head_node(environ["SLURM_JOB_NODELIST"]), job_id=job_id,
                   restart=int(environ.get("SLURM_RESTART_COUNT", 0) or 0), host=os.uname().nodename)


def run_summary(run_dir: str | Path) -> dict:
    """What a finished run left: adapter, last step, last logged metrics."""
    run_dir = Path(run_dir)
    out: dict = {"run_dir": str(run_dir)}
    if (run_dir / "adapter").is_dir():
        out["adapter"] = str(run_dir / "adapter")
    steps = sorted((run_dir / "checkpoints").glob("step-*/COMPLETED"))
    if steps:
        out["step"] = json.loads((steps[-1].parent / "state.json").read_text()).get("step")
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        losses = [r for r in map(json.loads, metrics.read_text().splitlines()) if "train/loss" in r]
        if losses:
            out["train/loss"] = losses[-1]["train/loss"]
    return out


class NodeTask:
    """submitit's function: one instance per run, called once on every node (task) of the job."""

    def __init__(self, spec: RunSpec):
        self.spec = spec

    def __call__(self) -> dict:
        spec, env = self.spec, NodeEnv.from_slurm()
        port = spec.port or port_for(env.job_id, env.restart)
        # This task already runs in the job's python (submitit started it with --python, container included).
        cmd = launcher_command(spec, env.node_rank, env.head, port, python=[sys.executable])
        print(f"[sqlft] run {spec.name}: node {env.node_rank}/{env.num_nodes} (machine_rank {env.node_rank}) on "
              f"{env.host}, job {env.job_id}, restart {env.restart}; head {env.head}:{port}; "
              f"{spec.procs_per_node} process(es) per node, {spec.total_procs} in all", flush=True)
        print("[sqlft] command: " + shlex.join(cmd), flush=True)
        launcher = Launcher(cmd, launcher_env(spec, env.node_rank), spec.repo, [1], [2])
        outcome = supervise([launcher], log=lambda m: print(m, file=sys.stderr, flush=True),
                            finished=AdapterWatch(spec.run_dir), exit_grace_s=spec.exit_grace_s)
        rc = outcome.returncodes[0]
        if outcome.ok:
            note = f" (the launcher exited {rc} after the adapter was written: ignored)" if rc else ""
            print(f"[sqlft] node {env.node_rank}: training finished{note}", flush=True)
            return {"node": env.node_rank, "host": env.host, "restarts": env.restart} | (
                run_summary(spec.run_dir) if env.node_rank == 0 else {})
        if not outcome.preempted:
            raise RuntimeError(f"training failed on node {env.node_rank} ({env.host}) with exit code {rc}; "
                               f"see this task's stderr in {spec.run_dir}/submitit/")
        if env.node_rank == 0 and outcome.wants_requeue:
            if env.restart >= spec.max_requeues:
                raise RuntimeError(f"preempted after {env.restart} requeues (--max-requeues {spec.max_requeues}); "
                                   f"the newest checkpoint is in {spec.run_dir}/checkpoints: submit the same command "
                                   f"with --run-name {spec.name} to continue")
            if not requeue(env.job_id):
                raise RuntimeError(f"stopped for preemption, but `scontrol requeue {env.job_id}` failed: submit the "
                                   f"same command with --run-name {spec.name} to continue from the checkpoint")
        then = ("Slurm decides whether the job is requeued" if not outcome.wants_requeue
                else "job requeued" if env.node_rank == 0 else "node 0 requeues the job")
        how = f"trainer exit {EXIT_PREEMPTED}" if outcome.saw_exit75 else f"launcher exit {rc}"
        print(f"[sqlft] node {env.node_rank}: stopped on a signal ({how}); {then}", flush=True)
        # SystemExit, not an Exception: submitit writes no result, so the job is not done. Status 0, so that srun's
        # --kill-on-bad-exit (which ends the job when a node crashes) leaves the other nodes to finish checkpointing.
        raise SystemExit(0)


def requeue(job_id: str, tries: int = 3) -> bool:
    for attempt in range(tries):
        try:
            proc = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            proc = subprocess.CompletedProcess([], 1, "", str(e))
        if proc.returncode == 0:
            print(f"[sqlft] requeued job {job_id}", flush=True)
            return True
        print(f"[sqlft] scontrol requeue {job_id} failed: {proc.stderr.strip()}", file=sys.stderr, flush=True)
        time.sleep(2 * (attempt + 1))
    return False


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
# checks before submitting


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


def parse_mem_mb(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.strip().upper())
    if not m:
        raise SubmitError(f"--mem '{text}': expected e.g. 64G or 2000M (per node).")
    scale = {"K": 1 / 1024, "": 1, "M": 1, "G": 1024, "T": 1024 * 1024}[m.group(2)]
    return int(float(m.group(1)) * scale)


def _kv_records(text: str) -> list[dict[str, str]]:
    """`scontrol show ... -o` output: one record per line, `Key=Value` pairs (values may hold spaces)."""
    records = []
    for line in text.splitlines():
        if "=" not in line:
            continue
        pairs = re.findall(r"(\S+?)=(.*?)(?=\s+[A-Za-z][\w:/.]*=|\s*$)", line.strip())
        records.append({k: v.strip() for k, v in pairs})
    return records


def _gpus(gres: str) -> int:
    total = 0
    for part in re.split(r",(?![^()]*\))", gres or ""):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", part.strip())
        if m:
            total += int(m.group(1))
    return total


def _slurm_minutes(value: str) -> int | None:
    if not value or value.upper() in ("UNLIMITED", "INFINITE", "NONE", "N/A"):
        return None
    return parse_time_minutes(value)


@dataclass
class Request:
    nodes: int
    gpus_per_node: int = 0
    cpus_per_task: int | None = None
    mem_mb: int | None = None
    time_min: int = 60


def check_partition(partitions_text: str, nodes_text: str, partition: str | None, req: Request) -> str:
    """Errors for an unknown partition or a request it can never satisfy; returns the partition's name."""
    parts = {p["PartitionName"]: p for p in _kv_records(partitions_text) if "PartitionName" in p}
    if not parts:
        raise SubmitError("Slurm reports no partitions (scontrol show partition).")
    if partition is None:
        defaults = [n for n, p in parts.items() if p.get("Default") == "YES"]
        if not defaults:
            raise SubmitError(f"No default partition on this cluster: pass --partition ({', '.join(sorted(parts))}).")
        partition = defaults[0]
    if partition not in parts:
        raise SubmitError(f"Partition '{partition}' does not exist on this cluster; partitions: "
                          f"{', '.join(sorted(parts))}.")
    p = parts[partition]
    nodes = [n for n in _kv_records(nodes_text)
             if "NodeName" in n and partition in (n.get("Partitions") or "").split(",")]
    total = int(p.get("TotalNodes") or len(nodes))
    where = f"partition '{partition}'"
    if req.nodes > total:
        raise SubmitError(f"--nodes {req.nodes} is more than {where} has ({total} nodes).")
    max_nodes = p.get("MaxNodes", "UNLIMITED")
    if max_nodes.isdigit() and req.nodes > int(max_nodes):
        raise SubmitError(f"--nodes {req.nodes} is more than {where} allows per job (MaxNodes={max_nodes}).")
    max_time = _slurm_minutes(p.get("MaxTime", "UNLIMITED"))
    if max_time is not None and req.time_min > max_time:
        raise SubmitError(f"--time {req.time_min} min is longer than {where} allows (MaxTime={p['MaxTime']}).")
    if nodes:
        def enough(what: str, need: int | None, have, unit: str) -> None:
            if not need:
                return
            fit = [n for n in nodes if have(n) >= need]
            if len(fit) < req.nodes:
                best = max(have(n) for n in nodes)
                raise SubmitError(f"{what}: {need} {unit} per node is more than {where} offers: {len(fit)} of its "
                                  f"nodes have that many (at most {best} {unit}), the job needs {req.nodes}.")

        enough("--gpus-per-node", req.gpus_per_node, lambda n: _gpus(n.get("Gres", "")), "GPUs")
        enough("--cpus-per-task", req.cpus_per_task, lambda n: int(n.get("CPUTot", 0) or 0), "CPUs")
        enough("--mem", req.mem_mb, lambda n: int(n.get("RealMemory", 0) or 0), "MB")
    if p.get("State", "UP") != "UP":
        print(f"warning: {where} is {p['State']}: the job will wait until it is UP.", file=sys.stderr)
    return partition


def query_cluster() -> tuple[str, str]:
    def run(*args):
        try:
            return subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60, check=True).stdout
        except subprocess.CalledProcessError as e:
            raise SubmitError(f"scontrol {' '.join(args)} failed: {(e.stderr or e.stdout).strip()}") from None
        except subprocess.TimeoutExpired:
            raise SubmitError(f"scontrol {' '.join(args)} did not answer in 60 s: is slurmctld reachable?") from None

    return run("show", "partition", "-o"), run("show", "node", "-o")


def filesystem_of(path: str | Path, mounts_text: str | None = None) -> tuple[str, str]:
    """(mount point, filesystem type) holding `path` (or its nearest existing parent), from /proc/mounts."""
    p, rest = Path(path).expanduser().absolute(), []
    while not p.exists() and p != p.parent:  # resolve symlinks in the part that exists
        p, rest = p.parent, [p.name, *rest]
    p = p.resolve().joinpath(*rest)
    if mounts_text is None:
        try:
            mounts_text = Path("/proc/mounts").read_text()
        except OSError:
            return "/", "unknown"
    best = ("/", "unknown")
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mnt = fields[1].replace("\\040", " ")
        if (str(p) == mnt or str(p).startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best[0]):
            best = (mnt, fields[2])
    return best


def check_output_root(root: str | Path, allow_local: bool, mounts_text: str | None = None) -> str | None:
    """The rule: a Slurm job's output root must be storage the compute nodes see.

    Refused (unless --allow-local-output or SQLFT_ALLOW_LOCAL_OUTPUT=1): a path under /tmp, /var/tmp, /dev/shm
    or /run, and any tmpfs / ramfs / overlay / squashfs mount: those are per machine (or per container) even when
    the path exists everywhere. Network filesystems (NFS, Lustre, GPFS, BeeGFS, CephFS, ...) pass; local disks
    (ext4, xfs, ...) pass with a note, since they may be exported or the cluster may be this one machine.
    Returns the note, if any.
    """
    if allow_local:
        return None
    p = str(Path(root).expanduser().absolute())
    mnt, fstype = filesystem_of(p, mounts_text)
    base = fstype.split(".")[0]
    under = next((d for d in LOCAL_ONLY_DIRS if p == d or p.startswith(d + "/")), None)
    if under or base in LOCAL_ONLY_FS:
        why = f"it is under {under}" if under else f"it is on {fstype} (mounted at {mnt})"
        raise SubmitError(
            f"--output-root '{root}' is not on shared storage: {why}, which each node has for itself. The nodes "
            f"would not see the checkpoints nor submitit's files. Use a shared filesystem (e.g. your home or project "
            f"space on NFS / Lustre), or pass --allow-local-output if every node really sees this path (one-machine "
            f"clusters such as slurm/dev-cluster.sh).")
    if base in SHARED_FS or fstype.startswith("fuse."):
        return None
    return (f"note: --output-root is on {fstype} ({mnt}); make sure every node mounts it (shared storage), "
            f"or the job cannot read its pickle nor write checkpoints.")


def accelerate_distributed_type(path: str, nodes: int) -> str:
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
    dist = str(data.get("distributed_type", "NO")).upper()
    if dist == "DEEPSPEED" and nodes > 1:
        launcher = (data.get("deepspeed_config") or {}).get("deepspeed_multinode_launcher", "pdsh")
        if launcher != "standard":
            raise SubmitError(f"--accelerate-config '{path}': multi-node DeepSpeed needs deepspeed_config."
                              f"deepspeed_multinode_launcher: standard (torchrun on every node), not '{launcher}' "
                              f"(pdsh needs ssh between nodes; accelerate #1837).")
    if dist in ("FSDP", "MEGATRON_LM", "XLA", "TPU"):
        raise SubmitError(f"--accelerate-config '{path}': distributed_type {dist} is not supported by ft/train.py.")
    return dist


# ------------------------------------------------------------------------------------------------
# the CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="launch/submit.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train across Slurm nodes through submitit (one task per node running accelerate launch).",
        epilog="Any other --section.key VALUE is a training override passed to ft/train.py (checked first).\n"
               "Rehearse on one machine: slurm/dev-cluster.sh up; eval \"$(slurm/dev-cluster.sh env)\".")
    p.add_argument("--config", required=True, help="training config (configs/X.yaml)")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--gpus-per-node", type=int, default=0,
                   help="GPUs (= training processes) per node; 0: CPU rehearsal, 1 process per node over gloo")
    p.add_argument("--accelerate-config", help="accelerate config file (accelerate_configs/*.yaml); its topology "
                                               "(processes, machines, rank, address) is replaced per node")
    g = p.add_argument_group("Slurm resources")
    g.add_argument("--partition")
    g.add_argument("--account")
    g.add_argument("--qos")
    g.add_argument("--time", default="60", help="time limit per attempt: minutes or [D-]HH:MM:SS [60]; the job is "
                                                "requeued at the limit and resumes")
    g.add_argument("--mem", help="memory per node, e.g. 256G")
    g.add_argument("--cpus-per-task", type=int, help="CPUs per node (there is one task per node)")
    g.add_argument("--constraint")
    g.add_argument("--exclusive", action="store_true")
    g.add_argument("--job-name", help="default: the run (or sweep) name")
    g.add_argument("--signal", default="USR2@90",
                   help="signal sent SECONDS before the time limit: the trainer checkpoints and the job is "
                        "requeued [USR2@90]")
    g.add_argument("--max-requeues", type=int, default=20, help="stop requeueing after this many restarts [20]")
    g.add_argument("--exit-grace", type=float, default=300.0, metavar="SECONDS",
                   help="once the final adapter is written, kill launchers still running this much later (stuck "
                        "in teardown) and count the run as finished [300]")
    g.add_argument("--setup", action="append", default=[], metavar="CMD",
                   help="shell line run in the sbatch script before srun (module load ...); repeatable")
    g.add_argument("--srun-arg", action="append", default=[], metavar="ARG",
                   help="extra srun argument, e.g. --container-image=... (pyxis); repeatable")
    o = p.add_argument_group("run")
    o.add_argument("--output-root", default="runs", help="shared folder holding one folder per run [runs]")
    o.add_argument("--run-name", help="run name (or sweep name with --sweep) [<config>-<date>-<time>]; an existing "
                                      "run of that name is continued from its newest checkpoint")
    o.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2", help="a job array: one run per combination")
    o.add_argument("--python", default=sys.executable,
                   help="python command on the nodes, e.g. a venv's python or 'apptainer exec --nv img.sif python3' "
                        "[this one: %(default)s]")
    o.add_argument("--port", type=int, help="rendezvous port [derived from the job id and restart count]")
    o.add_argument("--allow-local-output", action="store_true",
                   default=os.environ.get("SQLFT_ALLOW_LOCAL_OUTPUT", "") not in ("", "0"),
                   help="accept an output root under /tmp or on tmpfs (every node must still see it)")
    m = p.add_argument_group("mode")
    x = m.add_mutually_exclusive_group()
    x.add_argument("--dry-run", action="store_true", help="print the sbatch script and node commands; submit nothing")
    x.add_argument("--local", action="store_true", help="run the node commands on this machine, without Slurm")
    m.add_argument("--wait", action="store_true", help="wait for the job(s) and print the result; exit 1 on failure")
    return p


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


def plan(args: argparse.Namespace, train_args: list[str], *, check_cluster: bool | None = None) -> Plan:
    """Validate everything and build the runs; raises SubmitError / ConfigError before anything is submitted."""
    from ft.config import ConfigError, load_config, parse_overrides

    if args.nodes < 1:
        raise SubmitError("--nodes must be >= 1.")
    if args.gpus_per_node < 0:
        raise SubmitError("--gpus-per-node must be >= 0.")
    if args.max_requeues < 0:
        raise SubmitError("--max-requeues must be >= 0.")
    if args.exit_grace <= 0:
        raise SubmitError("--exit-grace must be > 0.")
    config = Path(args.config).expanduser()
    if not config.is_file():
        raise SubmitError(f"--config '{args.config}' does not exist.")
    config = config.resolve()
    try:
        overrides = parse_overrides(train_args)
    except ConfigError as e:
        raise SubmitError(f"{e} (launcher options are listed by --help)") from None
    if "train.output_dir" in overrides:
        raise SubmitError("Don't pass --train.output_dir: each run writes to <output-root>/<run-name>/ "
                          "(set --output-root / --run-name).")
    words = shlex.split(args.python)
    exe = words and (shutil.which(words[0]) if os.sep not in words[0] else words[0])
    if not exe or not os.access(exe, os.X_OK):
        raise SubmitError(f"--python '{args.python}': '{words[0] if words else ''}' is not an executable.")
    python = shlex.quote(str(Path(exe).absolute())) if len(words) == 1 else args.python
    time_min = parse_time_minutes(args.time)
    sig, sig_delay = parse_signal(args.signal)
    if sig_delay >= time_min * 60:
        raise SubmitError(f"--signal {args.signal}: {sig_delay} s ahead of a {time_min} min limit leaves no time "
                          f"to train.")
    mem_mb = parse_mem_mb(args.mem) if args.mem else None
    dist = accelerate_distributed_type(args.accelerate_config, args.nodes) if args.accelerate_config else None
    accel_cfg = str(Path(args.accelerate_config).resolve()) if args.accelerate_config else None

    root = Path(args.output_root).expanduser().absolute()
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = args.run_name or f"{config.stem}-{stamp}"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+=-]*", base):
        raise SubmitError(f"--run-name '{base}': use letters, digits and . _ + = - only.")
    combos = expand_sweep(args.sweep) if args.sweep else [{}]
    sweep_dir = root / base if args.sweep else None
    specs = []
    wandb_name = overrides.get("tracking.run_name")  # the W&B run name, when given, else the run's name
    for combo in combos:
        if args.sweep:
            slug = combo_slug(combo)
            name, run_dir, group = f"{base}-{slug}", sweep_dir / slug, base
            wb = f"{wandb_name}-{slug}" if wandb_name else name
        else:
            name, run_dir, group, wb = base, root / base, overrides.get("tracking.group"), wandb_name or base
        run_over = dict(overrides) | combo | {"train.output_dir": str(run_dir), "tracking.run_name": wb}
        if group:
            run_over["tracking.group"] = group
        try:
            load_config(config, run_over)
        except ConfigError as e:
            where = f"sweep run {name}: " if args.sweep else ""
            raise SubmitError(f"{where}{e}") from None
        flat = [a for k, v in run_over.items() for a in (f"--{k}", str(v))]
        specs.append(RunSpec(name=name, run_dir=str(run_dir), config=str(config), overrides=flat, nodes=args.nodes,
                             gpus_per_node=args.gpus_per_node, accelerate_config=accel_cfg,
                             accelerate_distributed=dist, python=python, repo=str(REPO), port=args.port,
                             max_requeues=args.max_requeues, exit_grace_s=args.exit_grace))
    job_name = args.job_name or base
    result = Plan(specs=specs, sweep_dir=sweep_dir, job_name=job_name)
    if args.local:
        return result

    have_slurm = shutil.which("scontrol") is not None and shutil.which("sbatch") is not None
    if check_cluster is None:
        check_cluster = have_slurm or not args.dry_run
    if check_cluster and not have_slurm:
        raise SubmitError("No Slurm here (scontrol / sbatch not found): use --local to run without Slurm, or "
                          "--dry-run to see what would be submitted.")
    note = check_output_root(root, args.allow_local_output)
    if note:
        result.notes.append(note)
    partition = args.partition
    request = Request(args.nodes, args.gpus_per_node, args.cpus_per_task, mem_mb, time_min)
    if check_cluster:
        try:
            partition = check_partition(*query_cluster(), args.partition, request)
        except SubmitError as e:
            if not (args.dry_run and str(e).startswith("scontrol")):
                raise
            result.notes.append(f"note: could not ask Slurm ({e.__str__().splitlines()[0]}); partition and "
                                f"resources not checked.")
    elif args.dry_run:
        result.notes.append("note: no Slurm here; partition and resources not checked.")

    # A node that crashes ends the job at once (instead of the others waiting for a collective's timeout); a node
    # that stopped for preemption exits 0, so it does not cut the others short.
    srun_args = ["--kill-on-bad-exit=1"]
    if args.cpus_per_task:
        srun_args.append(f"--cpus-per-task={args.cpus_per_task}")  # Slurm 22.05+ srun doesn't inherit it
    srun_args += args.srun_arg
    params: dict = {
        "job_name": job_name, "nodes": args.nodes, "ntasks_per_node": 1, "time": time_min,
        "signal_delay_s": sig_delay, "srun_args": srun_args,
        "setup": [f"export PYTHONPATH={shlex.quote(str(REPO))}${{PYTHONPATH:+:$PYTHONPATH}}", *args.setup],
        "additional_parameters": {"signal": f"{sig}@{sig_delay}", "requeue": True},
    }
    for key, value in (("partition", partition), ("account", args.account), ("qos", args.qos),
                       ("cpus_per_task", args.cpus_per_task), ("constraint", args.constraint)):
        if value:
            params[key] = value
    if args.mem:
        params["mem"] = f"{mem_mb}M"
    if args.exclusive:
        params["exclusive"] = True
    if args.gpus_per_node:
        params["gpus_per_node"] = args.gpus_per_node
    result.params = params
    return result


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


def write_run_files(spec: RunSpec, argv: list[str], p: Plan) -> None:
    run_dir = Path(spec.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    text = ["# submitted with", shlex.join([sys.executable, "launch/submit.py", *argv]), "",
            "# per-node commands", PORT_NOTE, describe_nodes(spec), ""]
    (run_dir / "command.txt").write_text("\n".join(text))


def _task_paths(job, nodes: int) -> list:
    return [job.task(t).paths for t in range(nodes)] if nodes > 1 else [job.paths]


def job_info(spec: RunSpec, job, p: Plan) -> dict:
    logs = {f"node{t}": {"stdout": str(paths.stdout), "stderr": str(paths.stderr)}
            for t, paths in enumerate(_task_paths(job, spec.nodes))}
    return {"job_id": job.job_id, "run": spec.name, "run_dir": spec.run_dir, "nodes": spec.nodes,
            "gpus_per_node": spec.gpus_per_node, "submitit_dir": str(p.submitit_dir), "logs": logs,
            "submitted": datetime.datetime.now().isoformat(timespec="seconds")}


def submit(p: Plan, argv: list[str]) -> list:
    import submitit

    for spec in p.specs:
        write_run_files(spec, argv, p)
    p.submitit_dir.mkdir(parents=True, exist_ok=True)
    executor = submitit.SlurmExecutor(folder=p.submitit_dir, python=p.specs[0].python)
    executor.update_parameters(**p.params)
    if len(p.specs) == 1:
        jobs = [executor.submit(NodeTask(p.specs[0]))]
    else:
        with executor.batch():  # one job array; the jobs are filled in when the block ends
            jobs = [executor.submit(NodeTask(spec)) for spec in p.specs]
    for spec, job in zip(p.specs, jobs):
        for paths in _task_paths(job, spec.nodes):
            # A result left by an older job of the same id (a dev cluster restarted from scratch numbers jobs from
            # 1 again) would make this job look finished.
            paths.result_pickle.unlink(missing_ok=True)
        info = job_info(spec, job, p)
        (Path(spec.run_dir) / "job.json").write_text(json.dumps(info, indent=2) + "\n")
    return jobs


def wait_for(jobs: list, poll_s: float = 2.0, timeout_s: float | None = None) -> list[tuple[str, object]]:
    """Wait for every job (through requeues); [(state, result or exception)] in order.

    A job is done when every task left a result, or sacct says it ended (cancelled, failed, timed out): sacct is
    asked every 5 s, not on submitit's back-off (which reaches minutes for multi-task jobs).
    """
    pending = dict(enumerate(jobs))
    out: dict[int, tuple[str, object]] = {}
    last_force, start = 0.0, time.monotonic()
    while pending:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"jobs {[j.job_id for j in pending.values()]} not done after {timeout_s:.0f} s")
        if time.monotonic() - last_force > 5:
            last_force = time.monotonic()
            type(jobs[0]).watcher.update()  # one sacct call for all registered jobs
        for i, job in list(pending.items()):
            if job.done():
                if not job.state.startswith("COMPLETED"):  # ended without results: don't wait 15 s per task
                    for j in [job, *getattr(job, "_sub_jobs", [])]:
                        j._results_timeout_s = 1
                try:
                    res = job.results()
                    out[i] = ("COMPLETED", res[0] if res else None)
                except Exception as e:  # noqa: BLE001 - reported per job
                    out[i] = (job.state, e)
                del pending[i]
        if pending:
            time.sleep(poll_s)
    return [out[i] for i in range(len(jobs))]


def run_local(p: Plan) -> int:
    """The node commands on this machine (head 127.0.0.1, a free port), node 0 on the console, all in logs."""
    import socket

    rc = 0
    for spec in p.specs:
        run_dir = Path(spec.run_dir)
        logs = run_dir / "local"
        logs.mkdir(parents=True, exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = spec.port or s.getsockname()[1]
        launchers, files = [], []
        for r in range(spec.nodes):
            out = open(logs / f"node{r}.out", "ab")
            err = open(logs / f"node{r}.err", "ab")
            files += [out, err]
            env = launcher_env(spec, r)
            if spec.gpus_per_node and spec.nodes > 1 and "CUDA_VISIBLE_DEVICES" not in os.environ:
                env["CUDA_VISIBLE_DEVICES"] = ",".join(str(r * spec.gpus_per_node + i) for i in range(spec.gpus_per_node))
            cmd = launcher_command(spec, r, "127.0.0.1", port)
            (logs / f"node{r}.cmd").write_text(shlex.join(cmd) + "\n")
            launchers.append(Launcher(cmd, env, spec.repo, [out.fileno()] + ([1] if r == 0 else []),
                                      [err.fileno()] + ([2] if r == 0 else [])))
        print(f"[sqlft] run {spec.name}: {spec.nodes} node(s) x {spec.procs_per_node} process(es) on this machine; "
              f"logs in {logs}/", flush=True)
        try:
            outcome = supervise(launchers, finished=AdapterWatch(run_dir), exit_grace_s=spec.exit_grace_s)
        finally:
            for f in files:
                f.close()
        if outcome.ok:
            print(f"[sqlft] run {spec.name} finished: {json.dumps(run_summary(run_dir))}", flush=True)
            continue
        if outcome.preempted:
            print(f"[sqlft] run {spec.name} checkpointed and stopped; run the same command with --run-name "
                  f"{p.sweep_dir.name if p.sweep_dir else spec.name} to continue.", flush=True)
            return EXIT_PREEMPTED
        print(f"error: run {spec.name} failed (exit codes {outcome.returncodes}); logs in {logs}/", file=sys.stderr)
        rc = 1
    return rc


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args, train_args = parser.parse_known_args(argv)
    from ft.config import ConfigError

    try:
        p = plan(args, train_args)
    except (SubmitError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for note in p.notes:
        print(note, file=sys.stderr)
    if args.dry_run:
        print(f"# sbatch script ({'job array of ' + str(len(p.specs)) + ' runs, ' if len(p.specs) > 1 else ''}"
              f"submitit writes it to {p.submitit_dir}/<job id>_submission.sh)")
        print(sbatch_script(p))
        print("# per-node commands (each node's submitit task runs its line, forwarding stop signals)")
        print(PORT_NOTE)
        for spec in p.specs:
            print(describe_nodes(spec))
        print("\n# nothing submitted (--dry-run)")
        return 0
    if args.local:
        return run_local(p)

    try:
        jobs = submit(p, argv)
    except Exception as e:  # noqa: BLE001 - sbatch's own message is the useful part
        print(f"error: submission failed: {e}", file=sys.stderr)
        return 1
    procs = p.specs[0].procs_per_node
    kind = f"{procs} GPU process(es)" if p.specs[0].gpus_per_node else "1 CPU process (gloo; no GPUs requested)"
    head = (f"submitted job array {jobs[0].job_id.split('_')[0]} ({len(jobs)} runs)" if len(jobs) > 1
            else f"submitted job {jobs[0].job_id}")
    print(f"{head}: {args.nodes} node(s) x {kind}, partition {p.params.get('partition') or '(default)'}")
    for spec, job in zip(p.specs, jobs):
        print(f"  run {spec.name}  job {job.job_id}\n    folder: {spec.run_dir}/  (checkpoints/, adapter/, "
              f"metrics.jsonl, job.json)")
        logs = job_info(spec, job, p)["logs"]
        for node, paths in logs.items():
            print(f"    {node}: {paths['stdout']}  (+ .err)")
    first = jobs[0].job_id.split("_")[0]
    print(f"  watch: squeue -j {first}; sacct -j {first}   cancel: scancel {first}")
    if not args.wait:
        return 0
    rc = 0
    for spec, (state, res) in zip(p.specs, wait_for(jobs)):
        if isinstance(res, BaseException):
            rc = 1
            print(f"run {spec.name}: {state}: {str(res).strip().splitlines()[-1] if str(res).strip() else res!r}")
        else:
            print(f"run {spec.name}: {state}: {json.dumps(res)}")
    return rc


if __name__ == "__main__":
    if __package__ in (None, ""):
        from launch.submit import main as _main  # the module, not __main__, owns the classes submitit pickles

        sys.exit(_main())
    sys.exit(main())
