"""Stop signals, for every command that can be stopped (training, evaluation): SIGTERM (preemption, scancel, a
scheduler), SIGUSR1/2 (Slurm's warning ahead of the time limit) and SIGINT (Ctrl-C; a second one stops at once).

A launcher starts its processes with these signals *blocked* (`blocked()`), not ignored: one that reaches a process
while it imports waits, pending, and is delivered the moment the process installs its handlers
(`StopFlag.install()` unblocks them). An ignored signal would be discarded, a default one would kill the process.
Torch-free: the launcher (launch/) imports it.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys

from ft.constants import EXIT_PREEMPTED, STOP_SIGNALS

EXIT_AT_ONCE = 128 + signal.SIGINT  # a second Ctrl-C: what a shell reports for an interrupted command


class Stopped(BaseException):
    """The process ends now: a stop signal before there was anything to save, or a second Ctrl-C.

    A BaseException, so that library code catching Exception while the signal lands doesn't swallow it.
    """

    def __init__(self, message: str, code: int = EXIT_PREEMPTED):
        super().__init__(message)
        self.code = code


@contextlib.contextmanager
def blocked(signals=STOP_SIGNALS):
    """Block `signals` in this thread meanwhile. A process started inside inherits them blocked (the mask survives
    fork and exec), so a signal reaching it before its handlers are installed waits for them; a signal this process
    gets meanwhile is delivered on leaving."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


class StopFlag:
    """What a stop signal does, from `install()` (first thing in a command's main()) to the process's end.

    During start-up (until `start_loop`), there is nothing to save: a lone process stops at once (`Stopped`, exit
    75). Under several processes a signal may reach one rank only (launchers don't forward USR1/USR2 to every
    worker), and a rank that left alone would leave the others dying in their next collective: it is remembered,
    and `start_loop` stops every rank together. From `start_loop` on (or from the start, with start_up=False) it is
    remembered and acted on at the next `should_stop` (between optimizer steps, between evaluation batches), which
    all-reduces it: if any rank was told to stop, every rank stops, and each knows the signal. A second Ctrl-C stops
    at once (exit 130).
    """

    def __init__(self, finishing: str = "finishing this step, then a checkpoint and stop", start_up: bool = True):
        self.finishing = finishing  # what happens now, for the one line a signal gets
        self.in_loop = not start_up
        self.received: int | None = None  # the first stop signal this process got
        self.agreed: int | None = None  # a stop signal some process got, once the processes agreed to stop
        self.interrupts = 0

    def install(self) -> None:
        """Handlers for the stop signals, then unblock them: one that arrived while the launcher held them blocked
        is handled here."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)

    @property
    def name(self) -> str:
        sig = self.received or self.agreed
        return signal.Signals(sig).name if sig else "no signal"

    def requested(self) -> bool:
        """This process got a stop signal (no agreement: for one process)."""
        return self.received is not None

    def _start_up_stop(self) -> Stopped:
        how = self.name if self.received else f"{self.name} (to another process)"
        return Stopped(f"stopped on {how} during start-up: no training step had run, nothing to save "
                       f"(exit {EXIT_PREEMPTED})")

    def _handle(self, signum, frame):
        self.interrupts += signum == signal.SIGINT
        if self.interrupts >= 2:
            raise Stopped("second Ctrl-C: stopped at once", code=EXIT_AT_ONCE)
        if self.received is not None:
            return
        self.received = signum
        if not self.in_loop and _world_size() == 1:
            raise self._start_up_stop()
        if _rank() == 0:  # (a launcher that forwards the signal gives it to every rank: one line)
            again = "; Ctrl-C again stops at once" if signum == signal.SIGINT else ""
            doing = self.finishing if self.in_loop else "every process stops once all are started"
            print(f"\n[sqlft] got {self.name}: {doing}{again}", file=sys.stderr, flush=True)

    def start_loop(self, accelerator=None) -> None:
        """From here on a signal is acted on at the next `should_stop`. Every rank agrees first (call it on every
        rank): one that was signalled while the others were still starting up stops them all, now."""
        self.in_loop = True
        if self.should_stop(accelerator):
            raise self._start_up_stop()

    def should_stop(self, accelerator=None) -> bool:
        """Did any process get a stop signal? Under several processes a collective: every rank calls it at the same
        point, and all learn the highest signal number any of them got (so every rank's message names it)."""
        sig = self.received or 0
        if accelerator is not None and accelerator.num_processes > 1:
            import torch

            got = accelerator.gather(torch.tensor([float(sig)], device=accelerator.device))
            sig = int(got.max().item())
        if sig:
            self.agreed = self.agreed or sig
        return bool(sig)


def exec_blocked(argv: list[str]) -> None:
    """`python -m ft.signals CMD [ARG...]`: CMD with the stop signals blocked, for shell scripts (slurm/train.sbatch),
    which can only ignore a signal (`trap ""`), and an ignored one is lost."""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    exec_blocked(sys.argv[1:])
