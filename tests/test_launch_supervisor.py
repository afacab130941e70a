"""launch/supervisor.py: what runs next to the training processes, on a Slurm node and in a local run. Signals reach
workers in sessions of their own, a signal to the caller's process group reaches only the supervisor, the status
files decide how a run ended, a stuck teardown after the adapter is written doesn't fail the run. Fast: fake
launchers and workers, no torch."""
import json
import os
import signal
import subprocess
import sys
import time

from launch import supervisor


def test_exit_code_matches_the_trainer():
    from ft.signals import EXIT_PREEMPTED

    assert supervisor.EXIT_PREEMPTED == EXIT_PREEMPTED


def test_outcome_decides_requeue():
    usr2, term = signal.SIGUSR2, signal.SIGTERM
    assert supervisor.Outcome([1], [usr2], True).wants_requeue  # time-limit warning / preemption notice
    assert not supervisor.Outcome([1], [term], True).wants_requeue  # scancel or Slurm's own requeue / preemption
    assert supervisor.Outcome([1], [term], True).preempted
    assert supervisor.Outcome([1], [], True).wants_requeue  # a worker exited 75 on its own
    assert not supervisor.Outcome([1], [], False).preempted  # a crash: no requeue loop
    assert not supervisor.Outcome([0], [usr2], False).preempted  # finished anyway


FAKE_LAUNCHER = r'''
import signal, subprocess, sys
# like torchrun: it must not act on the stop signals (they are blocked: inherited), start workers in sessions of
# their own, report exits
stop = {signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2}
assert stop <= signal.pthread_sigmask(signal.SIG_BLOCK, []), signal.pthread_sigmask(signal.SIG_BLOCK, [])
worker = subprocess.Popen([sys.executable, "-c", """
import signal, sys, time
print("ready", flush=True)  # (still "importing": its handler comes a second later)
time.sleep(1)
got = []
signal.signal(signal.SIGUSR2, lambda s, f: got.append(s))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGUSR2])  # as ft.signals.StopFlag.install: the pending one lands
while not got:
    time.sleep(0.05)
sys.exit(75)
"""], start_new_session=True)
rc = worker.wait()
print(f"exitcode  : {rc} (pid: {worker.pid})", file=sys.stderr, flush=True)
sys.exit(1 if rc else 0)
'''


def test_stop_signal_reaches_workers_in_their_own_session_even_before_their_handlers(tmp_path):
    fake = tmp_path / "fake_launcher.py"
    fake.write_text(FAKE_LAUNCHER)
    driver = ("import json, os, sys; from launch.supervisor import Launcher, supervise;"
              f"o = supervise([Launcher([sys.executable, {str(fake)!r}], dict(os.environ), '.', [1], [2])]);"
              "print(json.dumps([o.returncodes, o.signals, o.saw_exit75, o.wants_requeue]), flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGUSR2)  # only the supervisor gets it; the worker must still stop
    out, err = proc.communicate(timeout=60)
    assert json.loads(out.strip().splitlines()[-1]) == [[1], [int(signal.SIGUSR2)], True, True], err
    assert "got SIGUSR2" in out


# The recipe run as the launcher itself (`sqlft train`, one process), with a helper of its own started after its
# handlers, as W&B's service process is (in a session of its own, default SIGTERM: a stop signal would kill it).
TRAINER_WITH_HELPER = r'''
import json, os, signal, subprocess, sys, time
got = []
signal.signal(signal.SIGTERM, lambda s, f: got.append(s))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
print("ready", flush=True)
while not got:
    time.sleep(0.05)
time.sleep(0.5)
with open(os.path.join(os.environ["SQLFT_STATUS_DIR"], "rank-0.json"), "w") as f:
    json.dump({"exit_code": 75, "step": 1, "message": f"helper {helper.poll()}"}, f)
helper.kill()
sys.exit(75)
'''


def test_the_trainers_own_helpers_get_no_stop_signal(tmp_path):
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER_WITH_HELPER)
    for is_trainer, helper in ((True, "None"), (False, str(-signal.SIGTERM))):  # False: the negative control
        driver = ("import json, os, sys; from launch.supervisor import Launcher, supervise;"
                  f"o = supervise([Launcher([sys.executable, {str(script)!r}], dict(os.environ), '.', [1], [2], "
                  f"is_trainer={is_trainer})]); print(json.dumps(o.statuses), flush=True)")
        proc = subprocess.Popen([sys.executable, "-c", driver], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
        assert proc.stdout.readline().strip() == "ready"
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        assert json.loads(out.strip().splitlines()[-1])["0"]["message"] == f"helper {helper}", (is_trainer, out, err)


HANGS_AFTER_ADAPTER = r'''
import os, sys, time
run = sys.argv[1]
os.makedirs(run + "/.adapter.tmp")
open(run + "/.adapter.tmp/adapter_model.safetensors", "w").write("x")
os.rename(run + "/.adapter.tmp", run + "/adapter")  # what the trainer does last
time.sleep(300)  # then hangs, like a process-group destroy waiting on a peer that died
'''


def test_launcher_stuck_after_the_adapter_is_killed_and_the_run_counts_as_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(supervisor, "FINISHED_CHECK_S", 0.2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter").mkdir()  # an adapter from an earlier attempt does not count
    (run / "adapter" / "adapter_model.safetensors").write_text("old")
    watch = supervisor.AdapterWatch(run)
    assert not watch()
    script = tmp_path / "hang.py"
    script.write_text(HANGS_AFTER_ADAPTER)
    import shutil as sh

    sh.rmtree(run / "adapter")
    t0 = time.monotonic()
    launcher = supervisor.Launcher([sys.executable, str(script), str(run)], dict(os.environ), ".", [1], [2])
    out = supervisor.supervise([launcher], finished=watch, exit_grace_s=1.0)
    assert time.monotonic() - t0 < 30
    assert out.finished and out.ok and not out.preempted and out.returncodes == [-signal.SIGKILL]




def status(code: int) -> dict:
    return {"exit_code": code, "step": 3, "message": None}


def test_exit_code_comes_from_the_status_files():
    O = supervisor.Outcome
    assert O([1], [signal.SIGTERM], True, statuses={0: status(75), 1: status(75)}).exit_code(2) == 75
    # one process failed and its peer was stopped by the launcher, or crashed on the broken connection: the
    # failure is what happened, and a data error is the cause of the crash it leads to
    assert O([1], [], True, statuses={0: status(2), 1: status(75)}).exit_code(2) == 2
    assert O([1], [], False, statuses={0: status(2), 1: status(1)}).exit_code(2) == 2
    assert O([1], [], True, statuses={0: status(75), 1: status(1)}).exit_code(2) == 1
    assert O([1], [], True, statuses={0: status(75)}).exit_code(2) == 1  # rank 1 left none: it was killed
    assert O([0], [], False, statuses={0: status(0)}).exit_code(2) == 0  # rank 1 exited 0 without one
    assert O([1], [], False, statuses={0: status(9)}).exit_code(1) == 1  # not a trainer code
    # no status files at all: the launchers' codes, and the log scan behind accelerate's 1
    assert O([2], [], False).exit_code(1) == 2 and O([75], [], False).exit_code(1) == 75
    assert O([1], [], True).exit_code(1) == 75 and O([-9], [], False).exit_code(1) == 1
    assert O([1], [], False, finished=True, statuses={0: status(1)}).exit_code(1) == 0  # adapter written
    assert O([-9], [signal.SIGTERM], False, killed=True).exit_code(1) == supervisor.EXIT_KILLED == 130


def test_read_statuses_skips_what_is_not_a_status(tmp_path):
    (tmp_path / "rank-0.json").write_text(json.dumps(status(75)))
    (tmp_path / "rank-1.json").write_text("{not json")
    (tmp_path / "rank-x.json").write_text(json.dumps(status(0)))
    (tmp_path / "rank-2.json").write_text(json.dumps({"exit_code": "75"}))
    assert supervisor.read_statuses(tmp_path) == {0: status(75)}


# A launcher that loses its worker's exit code, as accelerate does (exit 1, and no "exitcode: 75" line for the
# log scan): only the status file tells that the worker stopped for preemption.
LOSSY_LAUNCHER = r'''
import signal, subprocess, sys
worker = subprocess.Popen([sys.executable, "-c", """
import json, os, signal, sys, time
got = []
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda s, f: got.append(s))
signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
print("ready", os.getpid(), flush=True)
while not got or sys.argv[1] == "stubborn":
    time.sleep(0.05)
code = 75 if len(got) == 1 else 3  # two: the signal reached it directly too (a second Ctrl-C means "at once")
with open(os.path.join(os.environ["SQLFT_STATUS_DIR"], "rank-0.json"), "w") as f:
    json.dump({"exit_code": code, "step": 7, "message": signal.Signals(got[0]).name}, f)
sys.exit(code)
""", sys.argv[1]], start_new_session=True)
sys.exit(1 if worker.wait() else 0)
'''

DRIVER = ("import json, os, sys; from launch.supervisor import Launcher, supervise;"
          "o = supervise([Launcher([sys.executable] + sys.argv[1:], dict(os.environ), '.', [1], [2])]);"
          "print(json.dumps([o.returncodes, o.signals, o.saw_exit75, o.statuses, o.exit_code(1), o.killed]))")


def start_driver(tmp_path, mode: str) -> tuple[subprocess.Popen, int]:
    fake = tmp_path / "lossy_launcher.py"
    fake.write_text(LOSSY_LAUNCHER)
    # its own process group, like a command started from a shell; the launcher makes a session of its own
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(fake), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    line = proc.stdout.readline().split()
    assert line[:1] == ["ready"], proc.stderr.read()
    return proc, int(line[1])


def test_sigterm_to_the_process_group_stops_the_workers_through_the_supervisor(tmp_path):
    proc, worker = start_driver(tmp_path, "normal")
    os.killpg(proc.pid, signal.SIGTERM)  # what `kill -TERM -PGID` and a scheduler do
    out, err = proc.communicate(timeout=60)
    rcs, signals, saw75, statuses, code, killed = json.loads(out.strip().splitlines()[-1])
    assert rcs == [1] and signals == [int(signal.SIGTERM)] and saw75 and code == 75 and not killed, err
    assert statuses == {"0": {"exit_code": 75, "step": 7, "message": "SIGTERM"}}
    assert "got SIGTERM" in out


def test_ctrl_c_once_stops_cleanly_twice_kills(tmp_path):
    proc, worker = start_driver(tmp_path, "normal")
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground process group
    out, err = proc.communicate(timeout=60)
    rcs, signals, saw75, statuses, code, killed = json.loads(out.strip().splitlines()[-1])
    # the worker got one SIGINT, from the supervisor (so the trainer can say it stops for a Ctrl-C), and exited 75
    assert code == 75 and statuses["0"]["message"] == "SIGINT" and signals == [int(signal.SIGTERM)], out + err
    assert "[sqlft]" not in out and "Traceback" not in out + err, out + err  # the trainer's line is the one

    proc, worker = start_driver(tmp_path, "stubborn")  # a worker that won't stop (stuck in a collective)
    os.killpg(proc.pid, signal.SIGINT)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert json.loads(out.strip().splitlines()[-1])[4:] == [130, True], err
    assert "second interrupt: killing" in out and "Traceback" not in out + err
    deadline = time.time() + 10
    while alive(worker) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(worker)


def alive(pid: int) -> bool:
    """Running (a killed process whose parent died may stay a zombie until init reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
