"""Runs you can trust on shared storage (issue 32): checkpoints verified before they are resumed, NaN never saved nor
published, one run per folder, a full disk and a Ctrl-C said in one line. Tiny random Llama on CPU, real files,
real processes, a real full filesystem (tmpfs) where root may mount one."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_rows
from test_train import TRAIN, adapter_tensors, run, write_config

from ft import checkpoint as ckpt
from ft import runlock
from ft.config import ConfigError

SQLFT = [sys.executable, "-m", "ft.cli"]
# Constant LR after warmup: a run of 8 steps resumed to 12 is the same as 12 steps straight.
COMMON = dict(train={"max_steps": 12, "lr_scheduler": "constant", "warmup_steps": 2, "per_device_batch_size": 4,
                     "log_every": 2, "seed": 5},
              checkpoint={"every": 4, "keep_last": 3})


def same(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k] - b[k]).abs().max().item() for k in a)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, tiny_model, rows_file) -> Path:
    """12 steps, uninterrupted, alone in its folder: the run every other one must equal."""
    tmp = tmp_path_factory.mktemp("reference")
    run(write_config(tmp, tiny_model, rows_file, **COMMON))
    return tmp / "run"


@pytest.fixture(scope="module")
def run8(tmp_path_factory, tiny_model, rows_file) -> Path:
    """The same run stopped after 8 steps: checkpoints step-4 and step-8, each with its manifest."""
    tmp = tmp_path_factory.mktemp("run8")
    run(write_config(tmp, tiny_model, rows_file, **COMMON), "--train.max_steps", "8")
    return tmp / "run"


def copy_run(run8: Path, dest: Path) -> Path:
    shutil.copytree(run8, dest / "run")
    return dest / "run"


def flip_tensor_bytes(f: Path) -> None:
    """Bit rot inside the tensor data, the safetensors header left intact (it loads, with other numbers)."""
    data = bytearray(f.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    for i in range(header + 16, len(data), 97):
        data[i] ^= 0x40
    f.write_bytes(bytes(data))


def truncate(f: Path) -> None:
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


# ------------------------------------------------------------------------------------------------
# verified checkpoints


def test_a_damaged_newest_checkpoint_is_named_and_the_run_ends_as_an_uninterrupted_one(tmp_path, tiny_model, rows_file,
                                                                                       reference, run8):
    out = copy_run(run8, tmp_path)
    newest = out / "checkpoints" / "step-000008"
    flip_tensor_bytes(newest / "adapter" / "adapter_model.safetensors")
    truncate(newest / "optimizer.pt")
    (out / "checkpoints" / "step-000010").mkdir()  # a write that never finished: no COMPLETED
    proc = run(write_config(tmp_path, tiny_model, rows_file, **COMMON))
    err = proc.stderr
    assert "Traceback" not in err
    assert f"checkpoint {out / 'checkpoints' / 'step-000010'} skipped: no COMPLETED marker" in err
    assert (f"checkpoint {newest} skipped: adapter/adapter_model.safetensors: checksum mismatch" in err
            and "optimizer.pt: " in err and "truncated" in err), err[-3000:]
    assert f"resuming from {out / 'checkpoints' / 'step-000004'}, the newest checkpoint that verifies" in err
    assert "resumed from" in err and "at step 4" in err
    moved = list((out / "checkpoints" / "damaged").iterdir())
    assert len(moved) == 1 and moved[0].name.startswith("step-000008-")  # kept for inspection, out of the way
    assert same(adapter_tensors(reference / "adapter"), adapter_tensors(out / "adapter")) < 1e-6
    # negative control: the damaged adapter was far from the reference's step-8 adapter
    assert same(adapter_tensors(reference / "checkpoints" / "step-000008" / "adapter"),
                adapter_tensors(moved[0] / "adapter")) > 1e-3


def _damage(kind: str, step8: Path) -> str:
    """Damage the step-8 checkpoint one way; returns what the line must say."""
    if kind == "bit flip":
        flip_tensor_bytes(step8 / "adapter" / "adapter_model.safetensors")
        return "adapter/adapter_model.safetensors: checksum mismatch"
    if kind == "missing":
        (step8 / "scheduler.pt").unlink()
        return "scheduler.pt: missing"
    name = {"adapter": "adapter/adapter_model.safetensors", "optimizer": "optimizer.pt", "state": "state.json",
            "rng": "rng-rank0.pt"}[kind]
    truncate(step8 / name)
    return f"{name}: {(step8 / name).stat().st_size} bytes"


@pytest.mark.parametrize("kind", ["bit flip", "adapter", "optimizer", "state", "rng", "missing"])
def test_each_kind_of_damage_is_named_and_passed_over(tmp_path, run8, kind):
    out = copy_run(run8, tmp_path)
    expected = _damage(kind, out / "checkpoints" / "step-000008")
    said: list[str] = []
    assert ckpt.find_resume(out, "auto", said.append) == out / "checkpoints" / "step-000004"
    assert any(expected in line and "step-000008 skipped" in line for line in said), said
    assert any("resuming from" in line and "step-000004" in line for line in said), said
    # given explicitly, the damaged one is an error naming the file (exit 2), not a traceback
    shutil.copytree(out / "checkpoints" / "damaged", tmp_path / "d")
    explicit = next((tmp_path / "d").iterdir())
    (explicit / ckpt.MARKER).write_text("ok\n")
    with pytest.raises(ConfigError, match=re.escape(expected)):
        ckpt.find_resume(out, str(explicit))


def test_no_checkpoint_that_verifies_is_an_error_not_a_fresh_start(tmp_path, run8):
    out = copy_run(run8, tmp_path)
    for step in ("step-000004", "step-000008"):
        truncate(out / "checkpoints" / step / "state.json")
    with pytest.raises(ConfigError, match="no checkpoint in .* verifies .*state.json.*--checkpoint.resume none"):
        ckpt.find_resume(out, "auto", lambda m: None)
    assert (out / "checkpoints" / "step-000008").is_dir()  # nothing moved


def test_a_checkpoint_without_a_manifest_is_read_back_instead(tmp_path, run8):
    """Checkpoints written before manifests: accepted when every file reads back, said so; a truncated file is
    still caught (by reading it), a bit flip in tensor bytes can't be (no checksum to hold it against)."""
    out = copy_run(run8, tmp_path)
    for step in ("step-000004", "step-000008"):
        (out / "checkpoints" / step / ckpt.MANIFEST).unlink()
    said: list[str] = []
    assert ckpt.find_resume(out, "auto", said.append) == out / "checkpoints" / "step-000008"
    assert any("has no manifest.json (written by an older sqlft)" in line for line in said)
    truncate(out / "checkpoints" / "step-000008" / "optimizer.pt")
    said.clear()
    assert ckpt.find_resume(out, "auto", said.append) == out / "checkpoints" / "step-000004"
    assert any("optimizer.pt: unreadable" in line for line in said), said


# ------------------------------------------------------------------------------------------------
# NaN and Inf: never saved, never published, refused by every command that loads an adapter


def _poisoned(src: Path, dest: Path, tensor: str, rows: slice | list[int] = slice(None)) -> Path:
    from safetensors.torch import load_file, save_file

    if dest != src:
        shutil.copytree(src, dest, dirs_exist_ok=True)
    weights = load_file(dest / "model.safetensors")
    weights[tensor][rows] = float("nan")
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def test_a_run_whose_loss_turns_nan_stops_keeps_the_last_good_checkpoint_and_publishes_nothing(tmp_path, tiny_model,
                                                                                               rows_file):
    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    cfg = write_config(tmp_path, model, rows_file, **COMMON)
    run(cfg, "--train.max_steps", "4", "--checkpoint.every", "2")
    out = tmp_path / "run"
    published = adapter_tensors(out / "adapter")
    # the same run, resumed on a base whose final norm became NaN: from step 5 on, every loss is NaN
    _poisoned(model, model, "model.norm.weight")
    proc = run(cfg, "--train.max_steps", "8", "--checkpoint.every", "2", "--train.max_nonfinite_steps", "2",
               check=False)
    err = proc.stderr
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    assert "step 5: the loss and the gradient norm (nan) is not finite; its update was skipped" in err
    assert re.search(r"error: the loss .* at step 6 is not finite, 2 step\(s\) in a row \(train.max_nonfinite_steps 2\)"
                     r": training stopped and nothing was published; the newest checkpoint, .*step-000004, holds the "
                     r"last good weights", err), err[-3000:]
    assert sorted(p.name for p in (out / "checkpoints").glob("step-*")) == ["step-000002", "step-000004"]
    assert ckpt.verify(out / "checkpoints" / "step-000004") == []
    assert same(adapter_tensors(out / "adapter"), published) == 0  # the published adapter is untouched


def test_a_nan_batch_is_skipped_and_the_adapter_stays_finite(tmp_path, tiny_model):
    """One row whose tokens have NaN embeddings: its batch's update is skipped (on today's code the NaN spreads
    into every weight and an all-NaN adapter is published with exit 0)."""
    from tiny import build_tokenizer

    tok = build_tokenizer(tmp_path / "tok")
    poison = tok.convert_tokens_to_ids(["Â", "§"])  # the byte-level tokens of "§", in no other row
    model = _poisoned(tiny_model, tmp_path / "model", "model.embed_tokens.weight", poison)
    rows = make_rows(24)
    rows[5]["question"] += " §"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    proc = run(write_config(tmp_path, model, data, train={"max_steps": 8, "log_every": 1},
                            data={"eval_fraction": 0, "max_length": 256}))
    assert "its update was skipped (1 of train.max_nonfinite_steps 3 in a row)" in proc.stderr, proc.stderr[-3000:]
    weights = adapter_tensors(tmp_path / "run" / "adapter")
    assert all(torch.isfinite(t).all() for t in weights.values())
    assert any(t.abs().sum() > 0 for k, t in weights.items() if "lora_B" in k)  # it did train


def test_commands_refuse_an_adapter_holding_nan_or_unreadable(tmp_path, tiny_model):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForCausalLM

    from ft.inference import resolve_adapter
    from ft.model import ModelError

    adapter, schema = tmp_path / "adapter", tmp_path / "schema.sql"
    schema.write_text("CREATE TABLE c (id INT);")
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"])).save_pretrained(adapter)
    assert resolve_adapter(adapter)[0] == adapter  # a good adapter passes
    f = adapter / "adapter_model.safetensors"
    weights = load_file(f)
    next(iter(weights.values()))[0, 0] = float("inf")
    save_file(weights, f)
    for cmd in (["merge", "--adapter", str(adapter), "--out", str(tmp_path / "merged")],
                ["generate", "--adapter", str(adapter), "--question", "How many customers?",
                 "--schema", str(schema)]):
        proc = subprocess.run(SQLFT + cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert lines[0].startswith(f"error: adapter weights {f} hold NaN or Inf (1 of ")
        assert not (tmp_path / "merged").exists()
    truncate(f)
    with pytest.raises(ModelError, match="can't be read .*damaged or truncated"):
        resolve_adapter(adapter)


def test_weights_that_turned_nan_are_never_checkpointed(tiny_model):
    """Under DeepSpeed the engine steps inside the backward, so a bad update can't be skipped: the check before
    every checkpoint is what keeps it out (here on a plain model whose LoRA weights hold a NaN)."""
    from accelerate import Accelerator

    from ft.config import load_config
    from ft.model import add_lora, load_base_model
    from ft.nonfinite import NonFiniteError, check_weights

    cfg = load_config(None, {"model.name_or_path": str(tiny_model), "quantization.mode": "none",
                             "quantization.dtype": "float32", "model.gradient_checkpointing": "false"})
    model = add_lora(load_base_model(cfg, str(tiny_model))[0], cfg)
    acc = Accelerator(cpu=True)
    check_weights(acc, model, 3, "nowhere")  # finite: nothing said
    next(p for n, p in model.named_parameters() if "lora_A" in n).data[0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match="at step 3: no checkpoint was written"):
        check_weights(acc, model, 3, "nowhere")


# ------------------------------------------------------------------------------------------------
# one run per folder


def test_a_second_run_on_a_live_runs_folder_is_refused_and_the_first_is_unharmed(tmp_path, tiny_model, rows_file,
                                                                                  reference):
    cfg = write_config(tmp_path, tiny_model, rows_file, **COMMON)
    env = os.environ | {"WANDB_MODE": "offline"}
    both = [subprocess.Popen(TRAIN + ["--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=env) for _ in range(2)]
    deadline = time.time() + 300
    while all(p.poll() is None for p in both) and time.time() < deadline:
        time.sleep(0.02)
    loser = next(p for p in both if p.poll() is not None)
    winner = next(p for p in both if p is not loser)
    os.kill(winner.pid, signal.SIGSTOP)  # held mid-run while the others try
    try:
        out, err = loser.communicate()
        assert loser.returncode == 2 and "Traceback" not in err, err[-3000:]
        pattern = (rf"error: {re.escape(str(tmp_path / 'run'))} is in use by sqlft pid {winner.pid} on "
                   rf"{re.escape(socket.gethostname())} \(job none\) since \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d")
        assert re.search(pattern, err), err[-3000:]
        assert "---- resolved config ----" not in out  # refused before any work
        # `checkpoint.resume none` beside the live run: refused too, nothing of the live run moved to previous/
        proc = run(cfg, "--checkpoint.resume", "none", check=False)
        assert proc.returncode == 2 and re.search(pattern, proc.stderr), proc.stderr[-3000:]
        assert not (tmp_path / "run" / "previous").exists()
    finally:
        os.kill(winner.pid, signal.SIGCONT)
    out, err = winner.communicate(timeout=300)
    assert winner.returncode == 0, err[-3000:]
    assert same(adapter_tensors(reference / "adapter"), adapter_tensors(tmp_path / "run" / "adapter")) < 1e-6
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert steps == sorted(set(steps)) == list(range(2, 13, 2))  # one run's records only
    assert len(json.loads((tmp_path / "run" / "run.json").read_text())["attempts"]) == 1
    assert not (tmp_path / "run" / runlock.LOCK_NAME).exists()  # released at the end


def _lock_file(folder: Path, **fields) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"host": socket.gethostname(), "pid": 1, "job": None, "restart": 0, "started": time.time() - 600,
              "pid_start": None, "token": "theirs"} | fields
    path = folder / runlock.LOCK_NAME
    path.write_text(json.dumps(holder))
    return path


def test_a_stale_lock_is_taken_over_with_a_line_and_a_live_one_is_not(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    said: list[str] = []
    _lock_file(tmp_path / "a", pid=dead.pid)  # this host, a pid that no longer runs
    lock = runlock.RunLock(tmp_path / "a", say=said.append)
    lock.acquire()
    assert said and re.search(rf"took over .*a: the run that held it \(sqlft pid {dead.pid} on .*\) is gone \(no "
                              rf"process {dead.pid} on this host\)", said[0])
    assert json.loads((tmp_path / "a" / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / "a" / runlock.LOCK_NAME).exists()
    # another host: gone only once its heartbeat (the lock's mtime) is old
    path = _lock_file(tmp_path / "b", host="node-elsewhere", pid=4242, job="77")
    with pytest.raises(runlock.FolderInUse, match=r"in use by sqlft pid 4242 on node-elsewhere \(job 77\) since"):
        runlock.RunLock(tmp_path / "b", say=said.append).acquire()
    os.utime(path, (time.time() - 600, time.time() - 600))
    lock = runlock.RunLock(tmp_path / "b", say=said.append)
    lock.acquire()
    assert "its heartbeat is 600 s old" in said[-1]
    # and the heartbeat keeps a live holder's lock fresh
    old = time.time() - 100
    os.utime(lock.path, (old, old))
    lock.refresh()
    assert lock.path.stat().st_mtime > old + 50
    lock.release()


@pytest.mark.slow
def test_every_rank_of_a_refused_run_exits_2(tmp_path, tiny_model, rows_file):
    """2 processes: rank 0 finds the folder held (here by this live test process), every rank learns it and exits 2
    with the line; none waits in a barrier, no launcher traceback."""
    cfg = write_config(tmp_path, tiny_model, rows_file)
    _lock_file(tmp_path / "run", pid=os.getpid(), job="4711")
    ddp = str(REPO / "accelerate_configs" / "cpu_ddp.yaml")
    proc = subprocess.run(SQLFT + ["train", "--config", str(cfg), "--accelerate-config", ddp], capture_output=True,
                          text=True, cwd=REPO, timeout=600, env=os.environ | {"WANDB_MODE": "offline"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    said = f"is in use by sqlft pid {os.getpid()} on {socket.gethostname()} (job 4711) since"
    assert proc.stderr.count(said) == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "---- resolved config ----" not in proc.stdout
    assert json.loads((tmp_path / "run" / runlock.LOCK_NAME).read_text())["pid"] == os.getpid()  # left alone


def test_a_requeued_job_waits_for_its_predecessor(tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    path = _lock_file(tmp_path, host="node-hung", pid=4242, job="77", restart=0)
    said: list[str] = []
    threading.Timer(1.5, path.unlink).start()  # the predecessor writes its last checkpoint, then lets go
    lock = runlock.RunLock(tmp_path, requeue_wait_s=60, say=said.append)
    t0 = time.time()
    lock.acquire()
    assert 1.0 < time.time() - t0 < 30
    assert "waiting up to 60 s for the previous attempt of job 77" in said[0]
    lock.release()
    # one that never lets go: refused after the wait
    _lock_file(tmp_path, host="node-hung", pid=4242, job="77", restart=0)
    with pytest.raises(runlock.FolderInUse, match="in use by sqlft pid 4242 on node-hung"):
        runlock.RunLock(tmp_path, requeue_wait_s=1, say=said.append).acquire()


# ------------------------------------------------------------------------------------------------
# a full disk and a Ctrl-C: one line each


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("can't mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(folder: Path) -> None:
    with open(folder / "filler", "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass


def test_a_full_disk_while_logging_is_one_line(tmp_path, tiny_model, rows_file, small_disk):
    out = small_disk / "run"
    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 400, "log_every": 1,
                                                               "output_dir": str(out)})
    proc = subprocess.Popen(SQLFT + ["train", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO, env=os.environ | {"WANDB_MODE": "offline"})
    deadline = time.time() + 300
    trace = out / "examples.jsonl"  # written every step, ~60 bytes a line: metrics.jsonl (~1 KB) needs a page first
    while not (trace.exists() and trace.stat().st_size) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    fill(small_disk)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1 and "Traceback" not in err, err[-3000:]
    said = [line for line in err.splitlines() if "no space left" in line]
    assert len(said) == 1, err[-3000:]  # printed once (not again by the launcher)
    assert re.match(rf"error: no space left on {re.escape(str(out.resolve()))}/metrics\.jsonl; 0 MiB free there",
                    said[0]), said


def test_ctrl_c_in_any_command_is_one_line_and_130(tmp_path, tiny_model, rows_file):
    """`sqlft data stats` waiting for the bundled dataset another process is generating (the file lock held here):
    Ctrl-C there prints one line and exits 130, through the runner every command shares (ft.cli.run)."""
    import fcntl

    from ft.data.synthetic.generator import dataset_dir

    cache = tmp_path / "cache"
    cache.mkdir()
    target = dataset_dir(cache)
    cfg = write_config(tmp_path, tiny_model, rows_file, data={"source": "bundled", "cache_dir": str(cache)})
    with open(target.parent / f".{target.name}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        # SIGINT at its default in the command, as in a terminal: a test run started in the background by a shell
        # without job control ignores SIGINT, and a Python started with it ignored keeps ignoring it (as it should)
        proc = subprocess.Popen(SQLFT + ["data", "stats", "--config", str(cfg)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=REPO,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        deadline = time.time() + 120
        while f"-> FLOCK  ADVISORY  WRITE {proc.pid} " not in Path("/proc/locks").read_text():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130 and lines == ["sqlft data stats: interrupted (Ctrl-C)"], err[-3000:]


def test_the_runner_says_a_full_disk_in_one_line(tmp_path, capsys):
    import errno

    from ft.cli import Command
    from ft.cli import run as run_command

    def body(cfg, args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "eval" / "predictions.jsonl"))

    assert run_command(Command("eval", "x"), body, []) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no space left on {tmp_path / 'eval' / 'predictions.jsonl'}")


def test_skip_bad_rows_skips_a_spider_question_of_an_unknown_database(tmp_path):
    from ft.data.rows import DataError
    from ft.data.sources import check_rows, load_source

    tables = [{"db_id": "shop", "table_names_original": ["t"], "column_names_original": [[-1, "*"], [0, "id"]],
               "column_types": ["text", "number"], "primary_keys": [], "foreign_keys": []}]
    (tmp_path / "tables.json").write_text(json.dumps(tables))
    questions = [{"db_id": "shop", "question": "How many?", "query": "SELECT COUNT(*) FROM t"},
                 {"db_id": "shpo", "question": "How many?", "query": "SELECT COUNT(*) FROM t"}]
    (tmp_path / "dev.json").write_text(json.dumps(questions))
    rows = load_source(str(tmp_path), "spider", "dev")
    with pytest.raises(DataError, match=r"dev.json:2: db_id 'shpo' is not in .*tables.json \(close: shop\)"
                                        r"(.|\n)*skip_bad_rows"):
        check_rows(rows, skip_bad_rows=False)
    good, report = check_rows(rows, skip_bad_rows=True)
    assert [r.db_id for r in good] == ["shop"] and report["bad_reasons"] == {"unknown db_id": 1}
