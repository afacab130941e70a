"""The node side: start `accelerate launch` (or the recipe), pass stop signals on to the training processes, learn
how they ended, and requeue. `NodeTask` is what submitit pickles and runs on every node of a Slurm job; a local run
(`sqlft train`, `launch/submit.py --local`) uses the same `Launcher` and `supervise`.

How a training process ended comes from its status file: with SQLFT_STATUS_DIR set, every process of the recipe
writes `rank-<global rank>.json` = {"exit_code", "step", "message"} just before it exits (75: stopped on a signal,
0: finished, 2: config or data error, 1: crash). Launchers can't pass that on: accelerate turns any failing worker
into exit 1 and a traceback.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from ft.constants import EXIT_PREEMPTED, EXIT_USAGE
from ft.signals import blocked
from launch.plan import RunSpec, launcher_command, launcher_env, port_for
from launch.slurm import head_node, requeue

STATUS_ENV = "SQLFT_STATUS_DIR"
FINISHED_CHECK_S = 5.0
# Fallback only, for a rank that exited 75 but left no status file (killed while writing it, or a trainer run from
# an older checkout or container image that writes none): torchrun's failure report / accelerate's simple launcher.
_EXIT75 = re.compile(rb"exitcode\s*:\s*75\b|exit status 75\b")
EXIT_KILLED = 128 + signal.SIGINT  # a second Ctrl-C killed the run: what a shell reports for an interrupted command


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


def read_statuses(folder: str | Path) -> dict[int, dict]:
    """Global rank -> {"exit_code", "step", "message"} for every well-formed status file in `folder`."""
    out = {}
    for path in Path(folder).glob("rank-*.json"):
        try:
            rank, data = int(path.stem.split("-", 1)[1]), json.loads(path.read_text())
        except (ValueError, OSError):
            continue  # written atomically, so a partial file is someone else's: ignore it
        if isinstance(data, dict) and isinstance(data.get("exit_code"), int):
            out[rank] = data
    return out


class Launcher:
    """One launcher process (`accelerate launch ...`) in a session of its own, so that a signal to the caller's
    process group (Ctrl-C, `kill -TERM -PGID`) reaches only the supervisor, which decides what the training
    processes get. Its output is copied to sinks; its training processes report through a fresh status folder.

    It starts with the stop signals blocked (ft.signals.blocked), and so do the training processes it starts (they
    inherit the mask): the launcher never acts on one (torchrun would kill its workers), and a training process
    gets each one once it has installed its handlers, however early it came (an ignored signal would be lost).
    `is_trainer`: the command is the recipe itself (one process, no launcher): its children are its own helpers
    (W&B's service process, which a stop signal would kill), not training processes.
    """

    def __init__(self, cmd: list[str], env: dict, cwd: str, out_fds: list[int], err_fds: list[int],
                 is_trainer: bool = False):
        self.cmd, self.env, self.cwd = cmd, env, cwd
        self.out_fds, self.err_fds = out_fds, err_fds
        self.is_trainer = is_trainer
        self.proc: subprocess.Popen | None = None
        self.signalled: set[int] = set()  # processes sent the stop signal already
        self.statuses: dict[int, dict] = {}
        self._log_exit75 = False
        self._status_dir: str | None = None
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._status_dir = tempfile.mkdtemp(prefix="sqlft-status-")
        with blocked():
            self.proc = subprocess.Popen(self.cmd, cwd=self.cwd, env=self.env | {STATUS_ENV: self._status_dir},
                                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                         start_new_session=True)
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
                self._log_exit75 = True

    @property
    def saw_exit75(self) -> bool:
        """A training process of this launcher exited 75 (stopped on a signal, checkpoint written)."""
        return any(s["exit_code"] == EXIT_PREEMPTED for s in self.statuses.values()) or self._log_exit75

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send(self, sig: int, new_only: bool = False) -> None:
        """To the launcher and its training processes (torchrun starts each in a session of its own), or (new_only)
        to those started since the last call: a worker started after the signal came gets it too."""
        if not self.running():
            return
        pids = [self.proc.pid] + ([] if self.is_trainer else _children(self.proc.pid))
        for pid in pids:
            if new_only and pid in self.signalled:
                continue
            self.signalled.add(pid)
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
        if self._status_dir:
            self.statuses = read_statuses(self._status_dir)
            shutil.rmtree(self._status_dir, ignore_errors=True)
            self._status_dir = None
        return rc


def _as_trainer_code(code: int) -> int:
    return code if code in (0, EXIT_USAGE, EXIT_PREEMPTED) else 1


@dataclass
class Outcome:
    returncodes: list[int]
    signals: list[int]  # stop signals this process received, in order
    saw_exit75: bool
    finished: bool = False  # the run's final adapter was written during this attempt
    statuses: dict[int, dict] = field(default_factory=dict)  # global rank -> its status file
    killed: bool = False  # a second Ctrl-C killed the training processes

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

    def exit_code(self, ranks: int) -> int:
        """The run's exit code as the trainer means it, over its `ranks` processes: 0 finished, 75 stopped on a
        signal (checkpoint written), 2 config or data error, 1 anything else.

        The cause outranks its consequences: a config or data error (2) is found by a process alone, and its peers
        then crash on the broken connection (1) or are stopped by the launcher (75); a crash (1) likewise gets the
        others stopped. So 2 > 1 > 75 > 0. A process without a status file was killed (1), unless no process wrote
        one, when the launchers' exit codes are all there is."""
        if self.killed:
            return EXIT_KILLED
        if self.finished:
            return 0
        launchers = {_as_trainer_code(rc) for rc in self.returncodes}
        if self.statuses:
            missing = 0 if launchers == {0} else 1
            codes = {_as_trainer_code(self.statuses.get(r, {}).get("exit_code", missing)) for r in range(ranks)}
        else:  # accelerate's own launcher turns a worker's 75 into 1; the log scan still tells
            codes = {EXIT_PREEMPTED if c == 1 and self.saw_exit75 else c for c in launchers}
        return next((c for c in (EXIT_USAGE, 1, EXIT_PREEMPTED) if c in codes), 0)


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

    SIGTERM / USR1 / USR2 are passed on as they are; a training process started later (the launcher was still
    starting it) gets it when it appears; one still importing gets it once its handlers are installed (the signals
    are blocked until then, see Launcher). The first Ctrl-C (SIGINT) is passed on as SIGINT, so that the trainer
    says it is stopping for a Ctrl-C (its one line), and as SIGTERM to a process started later (a second SIGINT
    would mean "stop at once" to it); a second Ctrl-C kills everything.
    `finished()` (checked every FINISHED_CHECK_S seconds) says the run's final output is written; launchers still
    running `exit_grace_s` later are stuck in teardown (a process-group destroy waiting on a peer that died) and
    killed.
    """
    received: list[int] = []
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
    old = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in handled}
    killed = False
    try:
        for launcher in launchers:
            launcher.start()
        seen, stop_sig, interrupts = 0, None, 0
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
                now_sig = None
                for s in received[seen:]:
                    interrupts += s == signal.SIGINT
                    stop_sig = signal.SIGTERM if s == signal.SIGINT else s
                    now_sig = s if s != signal.SIGINT or interrupts == 1 else stop_sig
                    if s != signal.SIGINT:  # (a Ctrl-C is announced by the trainer, which knows what it will do)
                        log(f"[sqlft] got {signal.Signals(s).name}: asking the training processes to checkpoint "
                            f"and stop")
                seen = len(received)
                if interrupts >= 2 and not killed:
                    log("[sqlft] second interrupt: killing the training processes")
                    killed = True
                    for launcher in launchers:
                        launcher.kill()
                for launcher in launchers:
                    launcher.send(now_sig)
            elif stop_sig is not None:
                for launcher in launchers:
                    launcher.send(stop_sig, new_only=True)
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
    statuses = {rank: st for launcher in launchers for rank, st in launcher.statuses.items()}
    return Outcome(rcs, stops, any(launcher.saw_exit75 for launcher in launchers), done, statuses, killed)


# ------------------------------------------------------------------------------------------------
# one node of a Slurm job


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
