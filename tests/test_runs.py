"""A run's life as a new user lives it: a folder is only resumed by the run that made it, your own data gets its own
folder and a held-out split, a stop during the final evaluation keeps what is done and the same command finishes it,
evaluations of a run's adapter land where its report finds them, files others can read, a full disk said plainly."""
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO
from helpers import TRAIN, write_config
from helpers import run_train as run

from ft.config import ConfigError, default_output_dir, load_config

EVAL = [sys.executable, "-m", "ft.eval"]


# ------------------------------------------------------------------------------------------------
# a folder belongs to one run


def test_a_checkpoint_of_another_run_is_not_resumed(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 4}, checkpoint={"every": 2})
    run(cfg)
    # what may change on resume: the number of steps (and logging, evaluation, where it runs)
    run(cfg, "--train.max_steps", "6", "--train.log_every", "3")
    assert json.loads((tmp_path / "run" / "checkpoints" / "step-000006" / "state.json").read_text())["step"] == 6
    # another model setting, other data: refused, every difference named, and both ways out given
    other = tmp_path / "other.jsonl"
    other.write_text("".join(line + "\n" for line in rows_file.read_text().splitlines()[:30]))
    proc = run(cfg, "--lora.r", "4", "--data.source", str(other), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    err = proc.stderr
    assert "is a checkpoint of another run" in err and "lora.r: 16 in the checkpoint, 4 now" in err
    assert "data.source" in err and "--train.output_dir" in err and "--checkpoint.resume none" in err
    # the same data source with other content is caught too
    edited = tmp_path / "edited.jsonl"
    shutil.copy(rows_file, edited)
    (tmp_path / "e").mkdir()
    run(write_config(tmp_path / "e", tiny_model, edited, train={"max_steps": 2}))
    lines = edited.read_text().splitlines()
    edited.write_text("\n".join(lines[:-1]) + "\n")
    proc = run(write_config(tmp_path / "e", tiny_model, edited, train={"max_steps": 4}), check=False)
    assert proc.returncode == 2 and "the training rows differ" in proc.stderr
    # checkpoint.resume none: a fresh run here; the other run's files are set aside, not lost nor pruned
    before = sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("step-*"))
    run(cfg, "--lora.r", "4", "--checkpoint.resume", "none")
    previous = list((tmp_path / "run" / "previous").iterdir())
    assert len(previous) == 1 and sorted(p.name for p in (previous[0] / "checkpoints").glob("step-*")) == before
    assert (previous[0] / "adapter").is_dir() and (previous[0] / "metrics.jsonl").is_file()
    new = yaml_of(tmp_path / "run" / "checkpoints" / "step-000004" / "config.yaml")
    assert new["lora"]["r"] == 4


def yaml_of(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def test_own_data_gets_its_own_folder_and_a_held_out_split(tmp_path, tiny_model, rows_file):
    demo = load_config(REPO / "configs" / "demo.yaml")
    assert default_output_dir(demo) == "runs/demo"
    mine = load_config(REPO / "configs" / "demo.yaml", {"data.source": str(rows_file)})
    assert default_output_dir(mine) == "runs/train-smollm2-135m-instruct"  # the data's name and the model's
    from ft.config import resolve

    assert resolve(mine).tracking.run_name == "train-smollm2-135m-instruct"

    from ft.data.sources import load_splits

    d = load_config(None, {"data.source": str(rows_file)}).data  # no eval split given
    train, evals, report = load_splits(d, seed=0, min_eval=4)
    assert len(evals) == 4 and len(train) == 44 and "default held-out split" in report["eval_from"]
    off = load_config(None, {"data.source": str(rows_file), "data.eval_fraction": "0"}).data
    assert load_splits(off, seed=0, min_eval=4)[1] == []


def test_too_few_rows_for_a_step_says_why(tmp_path, tiny_model, rows_file):
    few = tmp_path / "few.jsonl"
    few.write_text("".join(line + "\n" for line in rows_file.read_text().splitlines()[:12]))
    cfg = write_config(tmp_path, tiny_model, few, data={"packing": True, "eval_fraction": 0.0, "max_length": 1024},
                       train={"per_device_batch_size": 4})
    proc = run(cfg, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert re.search(r"12 training examples make [123] rows \(packing puts several examples into one row", proc.stderr)
    assert "turn off data.packing" in proc.stderr and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------------
# evaluation: stopped and continued, in one place


def test_the_final_evaluation_says_what_it_scored_and_sets_trained_questions_apart(tmp_path, tiny_model,
                                                                                   shop_rows_file):
    # A separate held-out file that repeats two training rows (question and SQL), and one training question with
    # other SQL (the negative control: not the row trained on).
    rows = [json.loads(line) for line in shop_rows_file.read_text().splitlines()]
    held = tmp_path / "held.jsonl"
    other = dict(rows[2], query=next(r["query"] for r in rows if r["query"] != rows[2]["query"]))
    held_rows = [rows[0], dict(rows[1], question="  " + rows[1]["question"].upper()), other]
    held.write_text("".join(json.dumps(r | {"db_path": str(shop_rows_file.parent / "shop.sqlite")}) + "\n"
                            for r in held_rows))
    cfg = write_config(tmp_path, tiny_model, shop_rows_file, train={"max_steps": 1},
                       data={"eval_source": str(held)}, eval={"at_end": True, "batch_size": 3, "max_new_tokens": 8})
    run(cfg)
    for name, what in (("base", "tiny"), ("finetuned", "+ adapter at step 1")):
        m = json.loads((tmp_path / "run" / "eval" / f"{name}_metrics.json").read_text())
        assert m["trained_questions"] == 2 and m["n"] == 3, m
        assert what in m["scored_model"] and "as trained: base none" in m["scored_model"], m["scored_model"]
        keyed = {json.loads(line)["key"]: json.loads(line) for line in
                 (tmp_path / "run" / "eval" / f"{name}_predictions.jsonl").read_text().splitlines()}
        assert sorted(bool(p.get("trained")) for p in keyed.values()) == [False, True, True]


@pytest.mark.slow
def test_a_stop_during_the_final_evaluation_keeps_what_is_done(tmp_path, tiny_model, shop_rows_file):
    cfg = write_config(tmp_path, tiny_model, shop_rows_file, train={"max_steps": 4},
                       data={"eval_fraction": 0.5}, eval={"at_end": True, "batch_size": 1, "max_new_tokens": 48})
    proc = subprocess.Popen(TRAIN + ["--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=os.environ | {"WANDB_MODE": "offline"})
    base = tmp_path / "run" / "eval" / "base_metrics.json"
    tuned = tmp_path / "run" / "eval" / "finetuned_predictions.jsonl"
    deadline = time.time() + 300
    while not (tuned.is_file() and tuned.read_text().strip()) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 75, err[-3000:]
    assert "during the final evaluation" in err and "the same command continues it" in err
    assert json.loads(base.read_text())["complete"] is True  # the base model's finished evaluation is kept
    done = [json.loads(line)["key"] for line in tuned.read_text().splitlines()]
    assert 0 < len(done) < 12 and not (tmp_path / "run" / "adapter").exists()
    base_before = base.read_text()
    # the same command: no training step (the final checkpoint is there), base reused, the rest evaluated
    proc = run(cfg)
    assert base.read_text() == base_before
    final = [json.loads(line) for line in tuned.read_text().splitlines()]
    assert len(final) == 12 and {f["key"] for f in final} >= set(done)
    assert json.loads((tmp_path / "run" / "eval" / "finetuned_metrics.json").read_text())["complete"] is True
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file() and "adapter:" in proc.stdout


@pytest.mark.slow
def test_eval_of_a_runs_adapter_lands_in_the_run_and_survives_retraining(tmp_path, tiny_model, shop_rows_file):
    cfg = write_config(tmp_path, tiny_model, shop_rows_file, train={"max_steps": 2},
                       eval={"at_end": True, "max_new_tokens": 6})
    run(cfg)
    adapter = tmp_path / "run" / "adapter"
    ev = subprocess.run(EVAL + ["--adapter", str(adapter), "--max-new-tokens", "6"], capture_output=True, text=True,
                        cwd=REPO, timeout=600)
    assert ev.returncode == 0, ev.stderr[-3000:]
    (metrics,) = (tmp_path / "run" / "eval").glob("eval__*_metrics.json")  # named for the data and the model
    assert json.loads(metrics.read_text())["complete"]
    assert "kinds" in json.loads(metrics.read_text())  # the run's training databases are known: seen vs unseen
    # training again (more steps) replaces adapter/, not the evaluation beside it
    run(cfg, "--train.max_steps", "4")
    assert metrics.is_file()
    from ft.report import load_run

    assert metrics.name.removesuffix("_metrics.json") in load_run(tmp_path / "run").final  # the report finds it
    # --compare takes the folders the help shows, and a missing path is an error, not a traceback
    done = metrics.with_name(metrics.name.replace("_metrics.json", "_predictions.jsonl"))
    cmp_ = subprocess.run(EVAL + ["--compare", str(done),
                                  str(tmp_path / "run" / "eval" / "finetuned_predictions.jsonl")],
                          capture_output=True, text=True, cwd=REPO)
    assert cmp_.returncode == 0 and "common questions" in cmp_.stdout, cmp_.stderr
    for a, b, says in ((tmp_path / "run" / "eval", adapter, "several prediction files"),
                       (done, tmp_path / "nope", "nope' does not exist")):
        bad = subprocess.run(EVAL + ["--compare", str(a), str(b)], capture_output=True, text=True, cwd=REPO)
        assert bad.returncode == 2 and "Traceback" not in bad.stderr and says in bad.stderr, bad.stderr


def test_eval_checks_its_output_place_before_loading_a_model(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.access(ro, os.W_OK):  # root writes anywhere: a path under a file can't be written by anyone
        ro = tmp_path / "a-file"
        ro.write_text("")
        ro = ro / "out"
    t0 = time.time()
    ev = subprocess.run(EVAL + ["--model", "./no/such/model-is-loaded", "--out", str(ro)], capture_output=True,
                        text=True, cwd=REPO)
    assert ev.returncode == 2 and "Traceback" not in ev.stderr
    assert ("--out" in ev.stderr or "model.name_or_path" in ev.stderr) and time.time() - t0 < 60
    ev = subprocess.run(EVAL + ["--out", str(ro)], capture_output=True, text=True, cwd=REPO)
    assert ev.returncode == 2 and "--out" in ev.stderr and "cannot write" in ev.stderr, ev.stderr[-2000:]


def test_no_gold_query_ran_is_an_error(tmp_path, tiny_model):
    from conftest import make_rows

    broken = tmp_path / "db.sqlite"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r | {"db_id": "x", "db_path": "db.sqlite"}) + "\n" for r in make_rows(4)))
    broken.write_bytes(b"")  # an empty file: a valid, empty SQLite database with none of the tables
    ev = subprocess.run(EVAL + ["--model", str(tiny_model), "--data", str(data), "--max-new-tokens", "4",
                                "--out", str(tmp_path / "ev")], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert ev.returncode == 1, ev.stderr[-3000:]
    assert "could not run" in ev.stderr and "no gold query ran" in ev.stderr and "x (4)" in ev.stderr


# ------------------------------------------------------------------------------------------------
# files others can read, a full disk


def test_written_files_honour_the_umask(tmp_path, tiny_model):
    from ft.data.sources import write_jsonl
    from ft.files import current_umask, share

    assert current_umask() == current_umask()  # reading it leaves it as it was
    old = os.umask(0o022)
    try:
        path = write_jsonl([{"question": "q", "query": "SELECT 1", "schema": "CREATE TABLE t (a INT);"}],
                           tmp_path / "out.jsonl")
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        import tempfile

        folder = Path(tempfile.mkdtemp(dir=tmp_path))
        (folder / "f").write_text("x")
        (folder / "f").chmod(0o600)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700  # what tempfile leaves, and safetensors writes
        share(folder)
        assert stat.S_IMODE(folder.stat().st_mode) == 0o755 and stat.S_IMODE((folder / "f").stat().st_mode) == 0o644
        os.umask(0o077)
        share(folder)  # a stricter umask is honoured too
        assert stat.S_IMODE((folder / "f").stat().st_mode) == 0o600
    finally:
        os.umask(old)


@pytest.mark.slow
def test_merge_output_and_checkpoints_are_readable_by_others(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 2})
    run(cfg)
    adapter = tmp_path / "run" / "adapter" / "adapter_model.safetensors"
    assert stat.S_IMODE(adapter.stat().st_mode) & 0o044 == 0o044
    out = tmp_path / "merged"
    proc = subprocess.run([sys.executable, "-m", "ft.merge", "--adapter", str(tmp_path / "run" / "adapter"), "--out",
                           str(out), "--dtype", "float32"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.safetensors").stat().st_mode) == 0o644


@pytest.fixture
def small_disk(tmp_path):
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("can't mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.mark.slow
def test_a_full_disk_while_checkpointing_is_said_plainly(tmp_path, tiny_model, rows_file, small_disk):
    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 400, "output_dir": str(small_disk / "run")},
                       checkpoint={"every": 4, "keep_last": 5})
    proc = subprocess.Popen(TRAIN + ["--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=os.environ | {"WANDB_MODE": "offline"})
    first = small_disk / "run" / "checkpoints" / "step-000004" / "COMPLETED"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    free = shutil.disk_usage(small_disk).free
    (small_disk / "filler").write_bytes(b"\0" * (free - 64 * 1024))  # leave less than a checkpoint needs
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    assert "error: no space left on " + str(small_disk.resolve() / "run") in err and "previous checkpoint" in err
    assert "Traceback" not in err and "unexpected pos" not in err
    ckpts = small_disk / "run" / "checkpoints"
    assert not list(ckpts.glob(".tmp-step-*"))  # the temp folder is gone
    assert (ckpts / "step-000004" / "COMPLETED").exists()  # the previous checkpoint is intact
    assert not list((small_disk / "run").glob(".write-probe*"))


def test_no_write_probe_is_left_after_a_failed_start(tmp_path, small_disk):
    from ft.files import check_writable

    (small_disk / "filler").write_bytes(b"\0" * shutil.disk_usage(small_disk).free)
    (small_disk / "run").mkdir()
    try:
        check_writable(small_disk / "run", "Config key 'train.output_dir'")
    except ConfigError as e:
        assert "train.output_dir" in str(e)
    assert not list((small_disk / "run").iterdir())
