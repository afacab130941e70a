"""launch/local.py (`sqlft train`): the command it runs, accelerate without its traceback and with the worker's exit
code, and (slow) a tiny model trained through it, with W&B offline on as users run it: 0 when it finishes, 75 with a
complete checkpoint after SIGTERM to its process group, one Ctrl-C, or a SIGTERM that also reaches W&B's service (as
Slurm signals every process of a job), resumed as the same W&B run; 75 at once on a stop signal during start-up,
also when it reaches one rank of two; 2 on a data error, with no launcher traceback."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import helpers
import pytest
from conftest import REPO
from helpers import LAUNCH, merged
from wandb_files import wandb_runs

from ft.cli import parse
from launch import local
from launch.plan import accelerate_args

LOCAL = [sys.executable, "-m", "launch.local"]
CPU_DDP = str(REPO / "accelerate_configs" / "cpu_ddp.yaml")
ACCELERATE_WARNING = "were not passed to `accelerate launch`"
LAUNCHER_NOISE = ("Traceback", "CalledProcessError", "ChildFailedError", "KeyboardInterrupt", ACCELERATE_WARNING)


def command(*argv: str) -> tuple[list[str], int]:
    _, args = parse(local.COMMAND, list(argv), load=False)  # the command only: no config file needed
    return local.build_command(args, python="py")


def test_one_process_runs_the_recipe_itself_with_the_arguments_unchanged():
    cmd, procs = command("--config", "configs/x.yaml", "--lora.r", "64", "--train.learning_rate=1e-4")
    assert procs == 1
    assert cmd == ["py", "-m", "ft.train", "--config", "configs/x.yaml", "--lora.r", "64",
                   "--train.learning_rate", "1e-4"]
    assert command()[0] == ["py", "-m", "ft.train"]  # the trainer's own default config


def test_several_processes_go_through_quiet_accelerate():
    cmd, procs = command("--accelerate-config", CPU_DDP, "--lora.r", "8")
    assert procs == 2 and cmd[:3] == ["py", "-c", local.QUIET_ACCELERATE]
    line = " ".join(cmd[3:])
    assert line.startswith(f"--config_file {CPU_DDP} --num_processes 2 --num_machines 1 --main_process_port ")
    assert line.endswith("-m ft.train --lora.r 8")
    assert "--multi_gpu" not in line and "--mixed_precision" not in line  # the config file says
    cmd, procs = command("--num-processes", "2")
    line = " ".join(cmd[3:])
    assert procs == 2 and "--multi_gpu --num_processes 2 --num_machines 1 --main_process_port" in line
    assert "--mixed_precision no --dynamo_backend no -m ft.train" in line  # no "were not passed" warning
    assert command("--accelerate-config", CPU_DDP, "--num-processes", "1")[1] == 1


def test_usage_errors_before_anything_starts(capsys, monkeypatch):
    def started(*a, **k):
        raise AssertionError("a usage error started training")

    monkeypatch.setattr(local, "supervise", started)
    assert local.main(["--lora.rr", "8"]) == 2
    assert "Did you mean 'lora.r'?" in capsys.readouterr().err
    assert local.main(["--num-processes", "0"]) == 2
    assert "--num-processes must be >= 1" in capsys.readouterr().err
    assert local.main(["--accelerate-config", "/no/such.yaml"]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        local.main(["--num-process", "2"])
    assert e.value.code == 2 and "Did you mean --num-processes?" in capsys.readouterr().err


EXITS_75 = "import sys; print('error: stopped (exit 75)', file=sys.stderr); sys.exit(75)"


@pytest.mark.parametrize("procs", [1, 2])
def test_quiet_accelerate_passes_the_worker_exit_code_without_a_traceback(tmp_path, procs):
    """accelerate launch itself exits 1 with a CalledProcessError (1 process) or ChildFailedError (torchrun)."""
    script = tmp_path / "worker.py"
    script.write_text(EXITS_75)
    port = local._free_port()
    proc = subprocess.run([sys.executable, "-c", local.QUIET_ACCELERATE, *accelerate_args(procs, port=port),
                           str(script)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 75, proc.stderr
    assert proc.stderr.count("error: stopped (exit 75)") == procs
    for noise in LAUNCHER_NOISE:
        assert noise not in proc.stderr, proc.stderr


# ------------------------------------------------------------------------------------------------
# slow: a tiny model trained through `sqlft train` (needs the trainer's status files and signal handling)


# `sqlft train` runs long enough to be stopped by a signal; W&B on (offline here, through WANDB_MODE): as a user
# without a login runs it
LOCAL_RUN = merged(LAUNCH, train={"output_dir": "{folder}/run", "max_steps": 400},
                   tracking={"wandb": True, "project": "t"})


def write_config(tmp: Path, tiny_model: Path, rows_file: Path, **train) -> Path:
    return helpers.write_config(tmp, tiny_model, rows_file, LOCAL_RUN, train=train)


def start(config: Path, *extra: str) -> subprocess.Popen:
    # A process group of its own, as a shell gives a command; signals go to the group, as Ctrl-C and kill -PGID do.
    return subprocess.Popen(LOCAL + ["--config", str(config), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=config.parent,
                            env=os.environ | {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"})


def wait_for_training(proc: subprocess.Popen, run_dir: Path, timeout: float = 300) -> None:
    trace = run_dir / "examples.jsonl"
    deadline = time.time() + timeout
    while (not trace.is_file() or trace.stat().st_size == 0) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"exit {proc.returncode} before training started\n{proc.communicate()[1][-3000:]}"


def assert_stopped_with_a_checkpoint(proc: subprocess.Popen, run_dir: Path, ranks: int) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    done = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / "COMPLETED").is_file()]
    assert len(done) == 1 and not (run_dir / "adapter").exists(), done
    state = json.loads((done[0] / "state.json").read_text())
    assert done[0].name == f"step-{state['step']:06d}" and 0 < state["step"] < 400
    assert state["world_size"] == ranks and all((done[0] / f"rng-rank{r}.pt").is_file() for r in range(ranks))
    for noise in LAUNCHER_NOISE:
        assert noise not in out + err, err[-4000:]
    return err


@pytest.mark.slow
def test_finishes_with_exit_0_through_accelerate(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file, max_steps=4)
    proc = start(cfg, "--num-processes", "2")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert ACCELERATE_WARNING not in err and "Traceback" not in err


@pytest.mark.slow
def test_sigterm_to_the_process_group_checkpoints_every_rank_and_exits_75(tmp_path, tiny_model, rows_file):
    """Plain `accelerate launch` dies at once on this signal, leaving its workers to train on alone."""
    cfg = write_config(tmp_path, tiny_model, rows_file)
    proc = start(cfg, "--accelerate-config", CPU_DDP)
    wait_for_training(proc, tmp_path / "run")
    os.killpg(proc.pid, signal.SIGTERM)
    err = assert_stopped_with_a_checkpoint(proc, tmp_path / "run", ranks=2)
    assert "[sqlft] got SIGTERM" in err


def tree(pid: int) -> list[int]:
    import psutil

    return [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm-to-every-process"])
def test_a_stop_with_wandb_on_exits_75_and_the_resumed_run_continues_the_same_wandb_run(tmp_path, tiny_model,
                                                                                       rows_file, how):
    """Ctrl-C: the terminal signals the foreground process group (W&B's service, in a session of its own, is not in
    it; the supervisor must not pass the signal to it either). SIGTERM to every process of the run, W&B's service
    included, as Slurm does on preemption or scancel: a Go program dies on SIGTERM whatever its disposition, and the
    trainer must not care."""
    cfg = write_config(tmp_path, tiny_model, rows_file)
    run_dir = tmp_path / "run"
    proc = start(cfg)
    wait_for_training(proc, run_dir)
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        for pid in tree(proc.pid):
            os.kill(pid, signal.SIGTERM)
    err = assert_stopped_with_a_checkpoint(proc, run_dir, ranks=1)
    if how == "ctrl-c":
        assert err.count("[sqlft]") == 1 and "Ctrl-C" in err, err[-3000:]
    [(run_id, kinds, code)] = wandb_runs(run_dir)
    step = json.loads(next(run_dir.glob("checkpoints/step-*/state.json")).read_text())
    assert run_id == step["wandb_run_id"]
    if how == "ctrl-c":  # the service lived: the run was marked preempting and finished with the trainer's code
        assert "preempting" in kinds and code == 75, (kinds, code)
    else:  # the service died with the signal: the run was left unfinished (what the checks above tell apart)
        assert code is None, (kinds, code)

    # the same command (two steps more): the same W&B run, continued and finished
    proc = start(cfg, "--train.max_steps", str(step["step"] + 2))
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, f"{out[-2000:]}\n{err[-4000:]}"
    assert f"resumed from {run_dir / 'checkpoints'}" in err and "Traceback" not in err
    first, second = wandb_runs(run_dir)
    assert first[0] == second[0] == run_id and second[2] == 0, (first, second)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])  # USR2: outside Slurm
def test_a_stop_signal_during_start_up_exits_75_at_once(tmp_path, tiny_model, rows_file, sig):
    """To the trainer while it imports (as a scheduler that signals the processes themselves does; the supervisor
    is not told): the signal waits (blocked, not ignored) for its handlers, which stop it then, before any step. An
    ignored one would be lost: the run would train to the end."""
    cfg = write_config(tmp_path, tiny_model, rows_file)
    proc = start(cfg)
    deadline = time.time() + 60
    trainer = []
    while not trainer and time.time() < deadline:
        trainer = [p for p in tree(proc.pid)[1:] if "ft.train" in " ".join(psutil_cmdline(p))]
        time.sleep(0.01)
    os.kill(trainer[0], sig)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    name = signal.Signals(sig).name
    assert f"stopped on {name} during start-up: no training step had run" in err, err[-3000:]
    assert not (tmp_path / "run" / "examples.jsonl").exists() and not (tmp_path / "run" / "checkpoints").exists()
    for noise in LAUNCHER_NOISE + ("scontrol", "requeue"):
        assert noise not in out + err, err[-4000:]


def psutil_cmdline(pid: int) -> list[str]:
    import psutil

    try:
        return psutil.Process(pid).cmdline()
    except psutil.Error:
        return []


def rank_pids(launcher_pid: int) -> dict[int, int]:
    """Global rank -> pid of the training processes under `sqlft train` (torchrun's children), once exec'd."""
    import psutil

    out = {}
    for child in psutil.Process(launcher_pid).children(recursive=True):
        try:
            env, cmd = child.environ(), " ".join(child.cmdline())
        except psutil.Error:
            continue
        if "RANK" in env and "ft.train" in cmd:
            out[int(env["RANK"])] = child.pid
    return out


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["importing", "before-the-loop", "in-the-loop"])
def test_sigterm_to_one_rank_stops_every_rank_with_75(tmp_path, tiny_model, rows_file, moment):
    """Launchers don't pass a signal to every worker (Slurm's USR1/2 may reach one): the one that got it stops
    every rank through their agreement, and every rank names the signal; no rank dies in a collective."""
    cfg = write_config(tmp_path, tiny_model, rows_file)
    run_dir = tmp_path / "run"
    proc = start(cfg, "--accelerate-config", CPU_DDP)
    lines = []
    if moment == "importing":
        deadline = time.time() + 120
        while 1 not in rank_pids(proc.pid) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.01)
    elif moment == "before-the-loop":  # handlers installed (main's first thing), the model not yet loaded
        for line in proc.stdout:
            lines.append(line)
            if "---- resolved config ----" in line:
                break
    else:
        wait_for_training(proc, run_dir)
    os.kill(rank_pids(proc.pid)[1], signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    out = "".join(lines) + out
    assert proc.returncode == 75, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    assert "no signal" not in out + err and "Traceback" not in out + err, err[-4000:]
    if moment == "in-the-loop":
        assert "stopped on SIGTERM at step" in out, out[-2000:]
        assert len(list(run_dir.glob("checkpoints/step-*/COMPLETED"))) == 1
    else:  # both ranks stopped together, each saying why (not the other killed by torchrun, nor in a collective)
        assert err.count("stopped on SIGTERM during start-up") == 1, err[-4000:]
        assert err.count("stopped on SIGTERM (to another process) during start-up") == 1, err[-4000:]
        assert not (run_dir / "examples.jsonl").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.slow
def test_data_error_exits_2_without_a_launcher_traceback(tmp_path, tiny_model, rows_file):
    bad = tmp_path / "bad.jsonl"
    rows = rows_file.read_text().splitlines()
    bad.write_text("\n".join(rows[:5] + [json.dumps({"question": "q", "schema": "CREATE TABLE t (a INT);"})]) + "\n")
    cfg = write_config(tmp_path, tiny_model, bad)
    proc = start(cfg, "--accelerate-config", CPU_DDP)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 2, f"{out[-2000:]}\n{err[-4000:]}"
    assert "error:" in err and "bad.jsonl" in err
    for noise in ("CalledProcessError", "ChildFailedError", ACCELERATE_WARNING):  # accelerate's own noise
        assert noise not in err, err[-4000:]
