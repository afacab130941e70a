"""ft/signals.py: the one stop-signal class of training and evaluation, in processes of their own (fast, no torch).
A signal that came while the launcher held the stop signals blocked is handled when the handlers are installed;
during start-up a lone process stops at once, one of several waits for the others; evaluation finishes its batch;
a second Ctrl-C stops at once."""
import os
import signal
import subprocess
import sys

from conftest import REPO


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                          env=os.environ | {"PYTHONPATH": str(REPO)} | env)


BLOCKED_THEN_INSTALLED = """
import os, signal, sys
from ft.signals import StopFlag, Stopped, blocked
stop = StopFlag()
with blocked():  # as a process started by the launcher: the signals arrive blocked, while it imports
    os.kill(os.getpid(), signal.SIGTERM)
    print("alive while blocked", flush=True)
    try:
        stop.install()
    except Stopped as e:
        print(f"{e} / code {e.code}")
"""


def test_a_signal_while_blocked_is_handled_once_the_handlers_are_installed():
    proc = python(BLOCKED_THEN_INSTALLED)
    assert proc.returncode == 0, proc.stderr
    # one process in start-up: stopped at once, naming the signal (exit code 75, nothing to save)
    assert proc.stdout.splitlines() == [
        "alive while blocked",
        "stopped on SIGTERM during start-up: no training step had run, nothing to save (exit 75) / code 75"]


def test_without_blocking_the_same_signal_kills_the_process():
    # negative control: the default action (what a process gets that is neither blocked nor ignored)
    proc = python(BLOCKED_THEN_INSTALLED.replace("with blocked():", "if True:"))
    assert proc.returncode == -signal.SIGTERM and "alive" not in proc.stdout


ONE_OF_TWO = """
import os, signal
from ft.signals import StopFlag, Stopped
stop = StopFlag()
stop.install()
os.kill(os.getpid(), signal.SIGUSR1)  # start-up, one rank of two: remembered, the others are not left behind
print("still starting up", stop.requested(), flush=True)
try:
    stop.start_loop()  # (the agreement; one process here: its own flag)
except Stopped as e:
    print(e)
"""


def test_one_rank_of_several_waits_for_the_agreement_and_says_so_once():
    proc = python(ONE_OF_TWO, WORLD_SIZE="2", RANK="0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "still starting up True",
        "stopped on SIGUSR1 during start-up: no training step had run, nothing to save (exit 75)"]
    assert proc.stderr.strip() == "[sqlft] got SIGUSR1: every process stops once all are started"
    assert python(ONE_OF_TWO, WORLD_SIZE="2", RANK="1").stderr.strip() == ""  # rank 0 speaks for all


EVALUATION = """
import os, signal
from ft.signals import StopFlag, Stopped
stop = StopFlag("finishing this batch, then stopping", start_up=False)
stop.install()
os.kill(os.getpid(), signal.SIGINT)
print("batch finishes", stop.requested(), stop.should_stop(), stop.name, flush=True)
os.kill(os.getpid(), signal.SIGTERM)  # the launcher's repeat: no second line, not "at once"
print("still finishing", flush=True)
try:
    os.kill(os.getpid(), signal.SIGINT)
except Stopped as e:
    print(e, e.code)
"""


def test_evaluation_finishes_its_batch_and_a_second_ctrl_c_stops_at_once():
    proc = python(EVALUATION)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["batch finishes True True SIGINT", "still finishing",
                                        "second Ctrl-C: stopped at once 130"]
    assert proc.stderr.strip() == ("[sqlft] got SIGINT: finishing this batch, then stopping; Ctrl-C again stops "
                                   "at once")


def test_shell_scripts_start_a_command_with_the_stop_signals_blocked():
    show = "import signal; print(*map(int, signal.pthread_sigmask(signal.SIG_BLOCK, [])))"
    proc = subprocess.run([sys.executable, "-m", "ft.signals", sys.executable, "-c", show], capture_output=True,
                          text=True, timeout=60, cwd=REPO)
    from ft.constants import STOP_SIGNALS

    assert set(STOP_SIGNALS) <= set(map(int, proc.stdout.split())), proc.stdout + proc.stderr
    assert subprocess.run([sys.executable, "-c", show], capture_output=True, text=True).stdout.split() == []
