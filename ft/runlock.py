"""One run per output folder, on shared storage too.

Two runs in one folder destroy each other (the same temp checkpoint names, one pruning the other's checkpoints,
`checkpoint.resume none` moving the live run's files away). `flock` is not to be trusted on NFS / Lustre / GPFS, so
the lock is a file, `<output_dir>/.sqlft-lock`, created atomically (a hard link of a written temp file: the classic
NFS-safe way; O_EXCL where links are not supported) and holding the holder's host, pid, Slurm job id and restart
count and start time. A thread touches it every `HEARTBEAT_S` seconds (its mtime is the heartbeat).

Another run may take the lock over only when its holder is provably gone: on this host, its pid no longer that
process; on another host, a heartbeat older than `STALE_S` (a dead or hung node). A requeued Slurm job (same job
id, higher restart count) waits for its predecessor's lock rather than racing it (the predecessor may still be
writing its last checkpoint). Everything else is refused before any work: `error: <dir> is in use by sqlft pid N on
HOST (job J) since T ...`, exit 2. With several processes, rank 0 holds the lock and every rank learns the outcome
(`hold`).
"""
from __future__ import annotations

import atexit
import datetime
import json
import os
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ft.config import ConfigError

LOCK_NAME = ".sqlft-lock"
HEARTBEAT_S = 15.0
STALE_S = 180.0  # a heartbeat this old: the holder's node is dead or hung (generous: clocks of nodes differ a little)
REQUEUE_WAIT_S = STALE_S + 2 * HEARTBEAT_S  # a requeued job waits at most this long for its predecessor
BREAK_STALE_S = 60.0  # a takeover in progress for this long was abandoned by a dead process


class FolderInUse(ConfigError):
    """Another live run holds the output folder (exit 2, before any work)."""


@dataclass
class Holder:
    host: str
    pid: int
    job: str | None = None  # SLURM_JOB_ID
    restart: int = 0  # SLURM_RESTART_COUNT
    started: float = 0.0
    pid_start: str | None = None  # the process's start time in /proc: a reused pid is another process
    token: str = ""
    heartbeat: float = 0.0  # the lock file's mtime when read (not stored)

    def describe(self) -> str:
        since = datetime.datetime.fromtimestamp(self.started).strftime("%Y-%m-%d %H:%M:%S") if self.started else "?"
        return f"sqlft pid {self.pid} on {self.host} (job {self.job or 'none'}) since {since}"


def _pid_start(pid: int) -> str | None:
    """Start time of a process in clock ticks since boot (Linux /proc), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _this_process(token: str) -> Holder:
    return Holder(host=socket.gethostname(), pid=os.getpid(), job=os.environ.get("SLURM_JOB_ID"),
                  restart=int(os.environ.get("SLURM_RESTART_COUNT") or 0), started=time.time(),
                  pid_start=_pid_start(os.getpid()), token=token)


def read_holder(path: Path) -> Holder | None:
    """The lock's holder; None when there is no lock. A lock that can't be parsed (being written, or damaged) is
    an unknown holder whose heartbeat is the file's mtime."""
    try:
        mtime = path.stat().st_mtime
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
        doc.pop("heartbeat", None)
        return Holder(**doc, heartbeat=mtime)
    except (ValueError, TypeError):
        return Holder(host="?", pid=-1, heartbeat=mtime)


def gone(holder: Holder, stale_s: float = STALE_S, now: float | None = None) -> str | None:
    """Why the holder is provably gone, or None when it may be alive. On this host its process decides (a live one,
    even stopped or starved of its heartbeat, keeps the folder); on another host, its heartbeat."""
    age = (now or time.time()) - holder.heartbeat
    if holder.host == socket.gethostname() and holder.pid > 0:
        try:
            os.kill(holder.pid, 0)
            alive = holder.pid_start is None or _pid_start(holder.pid) in (None, holder.pid_start)
        except ProcessLookupError:
            alive = False
        except PermissionError:  # another user's process: alive
            alive = True
        return None if alive else f"no process {holder.pid} on this host"
    if age > stale_s:
        return f"its heartbeat is {age:.0f} s old (over {stale_s:.0f} s)"
    return None


class RunLock:
    def __init__(self, folder: str | Path, *, heartbeat_s: float = HEARTBEAT_S, stale_s: float = STALE_S,
                 requeue_wait_s: float = REQUEUE_WAIT_S, say=None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.heartbeat_s, self.stale_s, self.requeue_wait_s = heartbeat_s, stale_s, requeue_wait_s
        self.say = say or (lambda m: print(f"[sqlft] {m}", file=sys.stderr, flush=True))
        self.me = _this_process(uuid.uuid4().hex)
        self.lost: Holder | None = None  # set when another run took the lock over (we were thought gone)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- taking it ---------------------------------------------------------------------------

    def acquire(self) -> None:
        """Take the lock, or raise FolderInUse naming its holder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        waited_since = None  # a requeued job waiting for its predecessor: since when
        while True:
            if self._create():
                break
            holder = read_holder(self.path)
            if holder is None:
                continue  # released between our try and our read
            if holder.pid < 0 and time.time() - holder.heartbeat < 5:
                time.sleep(0.2)  # an O_EXCL lock whose content is being written
                continue
            if holder.host == self.me.host and holder.pid == self.me.pid:
                why = "it was this process's own"  # e.g. an earlier run in this process that was not released
            else:
                why = gone(holder, self.stale_s)
            if why is not None:
                if self._take_over(holder):
                    self.say(f"took over {self.folder}: the run that held it ({holder.describe()}) is gone ({why})")
                    break
                continue
            if self._predecessor(holder):
                if waited_since is None:
                    waited_since = time.time()
                    self.say(f"waiting up to {self.requeue_wait_s:.0f} s for the previous attempt of job "
                             f"{holder.job} ({holder.describe()}) to release {self.folder}")
                if time.time() - waited_since < self.requeue_wait_s:
                    time.sleep(min(1.0, self.heartbeat_s))
                    continue
            age = time.time() - holder.heartbeat
            after = ("" if holder.host == self.me.host else
                     f"; should that node be dead, the lock ({self.path}) is taken over once its heartbeat is "
                     f"{self.stale_s:.0f} s old")
            raise FolderInUse(
                f"{self.folder} is in use by {holder.describe()} (heartbeat {age:.0f} s ago): one run per folder. "
                f"Wait for it to end, or train into another folder (--train.output_dir DIR){after}")
        self._thread = threading.Thread(target=self._beat, name="sqlft-runlock", daemon=True)
        self._thread.start()
        atexit.register(self.release)

    def _predecessor(self, holder: Holder) -> bool:
        """The holder is an earlier attempt of this same Slurm job (requeued after preemption or a node failure)."""
        return bool(self.me.job) and holder.job == self.me.job and holder.restart < self.me.restart

    def _create(self) -> bool:
        tmp = self.folder / f"{LOCK_NAME}.{self.me.token}"
        tmp.write_text(json.dumps({k: v for k, v in asdict(self.me).items() if k != "heartbeat"}))
        try:
            os.link(tmp, self.path)  # atomic, and fails if the lock exists, on NFS too
            return True
        except FileExistsError:
            return False
        except OSError:  # no hard links here: exclusive create, then the content
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(tmp.read_text())
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _take_over(self, holder: Holder) -> bool:
        """Replace a gone holder's lock. A second lock file guards the replacement, so two runs that both found the
        holder gone can't both take it; under it, the holder is read again and must be the same."""
        breaker = self.folder / f"{LOCK_NAME}.break"
        try:
            fd = os.open(breaker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                if time.time() - breaker.stat().st_mtime > BREAK_STALE_S:
                    breaker.unlink(missing_ok=True)
            except FileNotFoundError:
                pass
            time.sleep(0.2)
            return False
        os.close(fd)
        try:
            now = read_holder(self.path)
            if now is not None and (now.token, now.pid, now.host) == (holder.token, holder.pid, holder.host):
                self.path.unlink(missing_ok=True)
            return self._create()
        finally:
            breaker.unlink(missing_ok=True)

    # ---- holding it --------------------------------------------------------------------------

    def _beat(self) -> None:
        while not self._stop.wait(self.heartbeat_s):
            self.refresh()

    def refresh(self) -> None:
        """The heartbeat: touch the lock, if it is still ours."""
        if self.lost is not None:
            return
        holder = read_holder(self.path)
        if holder is None or holder.token != self.me.token:
            self.lost = holder or Holder(host="?", pid=-1)
            self.say(f"error: lost the lock on {self.folder}"
                     + (f" to {holder.describe()}" if holder else " (its lock file was removed)")
                     + ": this run writes no more checkpoints there")
            return
        try:
            os.utime(self.path)
        except OSError:
            pass  # a shared filesystem hiccup: the next beat tries again

    def check(self) -> None:
        """Raise if another run took the folder over (before writing a checkpoint there)."""
        if self.lost is not None:
            raise FolderInUse(f"{self.folder} was taken over by {self.lost.describe()} (this run's heartbeat had "
                              f"stopped for over {self.stale_s:.0f} s): this run stops without writing there")

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        atexit.unregister(self.release)
        holder = read_holder(self.path)
        if holder is not None and holder.token == self.me.token:
            self.path.unlink(missing_ok=True)


# Locks this process holds, by folder: the checkpoint writer checks its folder's is still ours.
_HELD: dict[Path, RunLock] = {}


def hold(accelerator, folder: str | Path) -> RunLock | None:
    """Every process: rank 0 takes the lock on `folder`; if it can't, every rank raises the same FolderInUse (exit 2
    everywhere). Returns the lock on rank 0, None elsewhere."""
    from ft.distributed import on_main

    lock = RunLock(folder) if accelerator.is_main_process else None
    on_main(accelerator, lambda: lock.acquire())
    if lock is not None:
        _HELD[lock.folder.resolve()] = lock
    return lock


def release(lock: RunLock | None) -> None:
    if lock is not None:
        lock.release()
        _HELD.pop(lock.folder.resolve(), None)


def check_held(folder: str | Path) -> None:
    """Raise FolderInUse if this process held the lock on `folder` and another run took it over."""
    lock = _HELD.get(Path(folder).resolve())
    if lock is not None:
        lock.check()
