"""The training loop, end to end on a tiny random Llama (CPU)."""
import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO
from helpers import TRAIN, adapter_tensors, metrics, trace, write_config
from helpers import run_train as run

from ft import checkpoint as ckpt


def test_loss_falls_and_adapter_loads_and_wandb_offline(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file, tracking={"wandb": True, "project": "t"},
                       eval={"at_end": False, "loss_every": 10})
    proc = run(cfg)
    out = tmp_path / "run"
    m = [r for r in metrics(out) if "train/loss" in r]
    assert m[-1]["train/loss"] < 0.75 * m[0]["train/loss"], m
    assert {"train/lr", "train/grad_norm", "perf/tokens_per_s", "perf/target_tokens_per_s", "perf/samples_per_s",
            "perf/peak_memory_mb", "train/epoch"} <= set(m[-1])
    evals = [r["eval/loss"] for r in metrics(out) if "eval/loss" in r]
    assert len(evals) >= 3 and evals[-1] < evals[0]
    assert "---- resolved config ----" in proc.stdout and "adapter:" in proc.stdout

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, str(out / "adapter"))
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in model.named_parameters())
    # the frozen base is not in the adapter
    assert all("lora_" in k for k in adapter_tensors(out / "adapter"))

    # W&B offline run folder holds the logged metrics and the config
    runs = list((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    files = {p.name for p in runs[0].rglob("*")}
    assert any(f.endswith(".wandb") for f in files)
    raw = b"".join(p.read_bytes() for p in runs[0].rglob("*.wandb"))
    assert b"train/loss" in raw and b"eval/loss" in raw and b"learning_rate" in raw


def test_the_recipe_runs_in_process_and_leaves_the_signal_handlers_alone(tmp_path, tiny_model, rows_file):
    """setup -> fit -> finish called as functions (as tests and benchmarks do): the run completes, and the process's
    signal handlers are the ones it had (only main() installs the stop handlers)."""
    from ft.config import load_config, resolve
    from ft.train import setup, train

    before = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
    cfg = resolve(load_config(write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 2})), training=True)
    result = train(cfg)
    assert result["step"] == 2 and not result["preempted"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert {s: signal.getsignal(s) for s in before} == before
    assert sorted(trace(tmp_path / "run")) == [1, 2]
    # the pieces setup prepares, as a test or benchmark gets them
    again = resolve(load_config(write_config(tmp_path / "b", tiny_model, rows_file)), training=True)
    run = setup(again)
    assert run.total_steps == 30 and run.steps_per_epoch >= 1 and run.state.step == 0
    assert type(run.objective).__name__ == "SFT" and run.held_out.rows and run.held_out.loss_batches
    assert {s: signal.getsignal(s) for s in before} == before


def test_grad_accumulation_matches_big_batch(tmp_path, tiny_model, rows_file):
    """batch 1 x accumulation 4 == batch 4 x accumulation 1 (fp32), and mean-of-means would not be."""
    from ft.config import load_config, resolve
    from ft.data.batching import collate
    from ft.data.prompt import encode_rows
    from ft.data.rows import Row
    from ft.objectives.base import backward_window, token_loss_sum
    from ft.train import setup

    run = setup(resolve(load_config(write_config(tmp_path, tiny_model, rows_file)), training=True))
    model, acc, tok = run.model, run.accelerator, run.tokenizer
    rows = [Row(**json.loads(l)) for l in rows_file.read_text().splitlines()[:4]]
    ex, _ = encode_rows(rows, tok, "default", 512, "error")
    assert len({sum(l != -100 for l in e.labels) for e in ex}) > 1  # different target lengths
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.02)  # so lora_A gets gradients too

    def grads(micro_rows, mean_of_means=False):
        model.zero_grad()
        batches = [collate(r, ex, tok.pad_token_id, packed=False) for r in micro_rows]
        if mean_of_means:
            for b in batches:
                s, n = token_loss_sum(model, b)
                (s / n / len(batches)).backward()
        else:
            backward_window(model, acc, batches)
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    small = grads([[[0]], [[1]], [[2]], [[3]]])
    big = grads([[[0], [1], [2], [3]]])
    mom = grads([[[0]], [[1]], [[2]], [[3]]], mean_of_means=True)
    worst = max((small[k] - big[k]).abs().max().item() for k in big)
    assert worst < 1e-5
    # the same parameter update: one SGD step from the same weights
    lr = 0.1
    assert max((lr * small[k] - lr * big[k]).abs().max().item() for k in big) < 1e-6
    assert max((mom[k] - big[k]).abs().max().item() for k in big) > 1e-3 * max(big[k].abs().max().item() for k in big)


def test_qlora_4bit_path_on_cpu(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file,
                       quantization={"mode": "4bit", "dtype": "bfloat16", "compute_dtype": "bfloat16"},
                       train={"max_steps": 12})
    proc = run(cfg)
    assert "quantization 4bit" in proc.stderr + proc.stdout
    m = [r["train/loss"] for r in metrics(tmp_path / "run") if "train/loss" in r]
    assert m[-1] < m[0]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, tiny_model, rows_file):
    common = dict(train={"max_steps": 16, "per_device_batch_size": 2, "gradient_accumulation_steps": 2,
                         "epochs": 3, "seed": 3}, lora={"dropout": 0.1}, checkpoint={"every": 4, "keep_last": 2},
                  data={"packing": True, "max_length": 256})
    ref_dir, kill_dir = tmp_path / "ref", tmp_path / "kill"
    ref_dir.mkdir(), kill_dir.mkdir()
    run(write_config(ref_dir, tiny_model, rows_file, **common))

    cfg = write_config(kill_dir, tiny_model, rows_file, **common)
    proc = subprocess.Popen(TRAIN + ["--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = kill_dir / "run" / "checkpoints" / "step-000008" / "COMPLETED"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (kill_dir / "run" / "adapter").exists(), "the run finished before it could be killed"
    done = sorted(p.name for p in (kill_dir / "run" / "checkpoints").glob("step-*"))
    assert "step-000016" not in done

    newest = int(done[-1].split("-")[1])
    # negative controls, from copies of the killed run: a resume that restores the adapter and the data position but
    # not the dropout RNG, or not the optimizer's moments, must not give the uninterrupted run's adapter
    controls = {}
    for name in ("no_rng", "no_optimizer_state"):
        ctl = tmp_path / name
        shutil.copytree(kill_dir / "run", ctl / "run")
        ck = ctl / "run" / "checkpoints" / done[-1]
        if name == "no_rng":
            (ck / "rng-rank0.pt").unlink()
        else:
            state = torch.load(ck / "optimizer.pt", weights_only=False)
            torch.save(state | {"state": {}}, ck / "optimizer.pt")
        ckpt.write_manifest(ck)  # the changed checkpoint verifies: what it lacks is tested, not its checksums
        controls[name] = (write_config(ctl, tiny_model, rows_file, **common), ctl)

    proc = run(cfg)  # same command: resumes from the newest complete checkpoint
    # it did resume, at the step it was killed after (a run from step 0 is deterministic too and would also match)
    assert f"{done[-1]} at step {newest}" in proc.stderr + proc.stdout and 0 < newest < 16
    # the killed run's lock (ft/runlock.py) is taken over: its process is gone
    assert re.search(r"took over .*: the run that held it \(sqlft pid \d+ on .*\) is gone \(no process", proc.stderr)
    a, b = adapter_tensors(ref_dir / "run" / "adapter"), adapter_tensors(kill_dir / "run" / "adapter")
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert trace(ref_dir / "run") == trace(kill_dir / "run")
    assert len(list((kill_dir / "run" / "checkpoints").glob("step-*"))) == 2  # keep_last
    for name, (ctl_cfg, ctl) in controls.items():
        out = run(ctl_cfg)
        assert f"at step {newest}" in out.stderr + out.stdout, name
        c = adapter_tensors(ctl / "run" / "adapter")
        assert max((a[k] - c[k]).abs().max().item() for k in a) > 1e-4, f"{name}: the equality can't fail"


def test_sigterm_checkpoints_and_exits_for_requeue(tmp_path, tiny_model, rows_file):
    from wandb_files import wandb_runs

    from ft.constants import EXIT_PREEMPTED

    cfg = write_config(tmp_path, tiny_model, rows_file, train={"max_steps": 400, "per_device_batch_size": 2},
                       tracking={"wandb": True, "project": "t"})  # offline (WANDB_MODE), as users run
    proc = subprocess.Popen(TRAIN + ["--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    trace = tmp_path / "run" / "examples.jsonl"
    deadline = time.time() + 300
    while (not trace.exists() or trace.stat().st_size == 0) and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGUSR1)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == EXIT_PREEMPTED, out[-3000:]
    ckpts = list((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1 and (ckpts[0] / "COMPLETED").exists()
    stopped_at = int(ckpts[0].name.split("-")[1])
    assert 0 < stopped_at < 400
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert state["step"] == stopped_at
    [(run_id, kinds, code)] = wandb_runs(tmp_path / "run")  # marked preempting, finished with 75: resumable
    assert run_id == state["wandb_run_id"] and "preempting" in kinds and code == EXIT_PREEMPTED, (kinds, code)


def test_a_setting_added_since_the_checkpoint_does_not_block_its_resume():
    from ft import checkpoint as ckpt
    from ft.config import Config

    now = Config().to_dict()
    saved = json.loads(json.dumps(now))
    del saved["grpo"]["reward_test_suite"]  # a checkpoint written before the key existed
    assert ckpt.mismatches(saved, now, None, None) == []
    now["grpo"]["reward_test_suite"] = True  # ... but turning it on is a change
    assert ckpt.mismatches(saved, now, None, None) == ["grpo.reward_test_suite: None in the checkpoint, True now"]


def test_incomplete_checkpoint_is_ignored(tmp_path):
    from ft import checkpoint as ckpt

    out = tmp_path / "run"
    for step in (4, 8):
        d = ckpt.step_dir(out, step)
        d.mkdir(parents=True)
        (d / "state.json").write_text("{}")
    ckpt.write_manifest(ckpt.step_dir(out, 4))  # what publish() writes: the checkpoint verifies
    (ckpt.step_dir(out, 4) / ckpt.MARKER).write_text("ok")
    ckpt.temp_dir(out, 12).mkdir()  # a crash mid-write
    assert ckpt.find_resume(out, "auto") == ckpt.step_dir(out, 4)
    assert ckpt.find_resume(out, "none") is None
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.find_resume(out, str(ckpt.step_dir(out, 8)))


@pytest.mark.parametrize(
    "override,pattern",
    [
        (["--model.name_or_path", "./no/such/model"], "model.name_or_path"),
        (["--lora.r", "0"], "lora.r"),
        (["--train.output_dir", "/proc/sqlft-cannot-write"], "train.output_dir"),
        (["--lora.target_modules", "q_proj,nonexistent_proj"], "nonexistent_proj"),
    ],
)
def test_bad_input_is_a_clear_error(tmp_path, tiny_model, rows_file, override, pattern):
    cfg = write_config(tmp_path, tiny_model, rows_file)
    proc = run(cfg, *override, check=False)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "error:" in proc.stderr and pattern in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "run").glob("checkpoints/step-*"))


def test_bad_rows_name_the_file_and_row(tmp_path, tiny_model, rows_file):
    lines = rows_file.read_text().splitlines()
    bad = json.loads(lines[2])
    bad["query"] = ""
    lines[2] = json.dumps(bad)
    data = tmp_path / "bad.jsonl"
    data.write_text("\n".join(lines) + "\n")
    cfg = write_config(tmp_path, tiny_model, data)
    proc = run(cfg, check=False)
    assert proc.returncode == 2 and f"{data}:3" in proc.stderr and "skip_bad_rows" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()
    proc = run(cfg, "--data.skip_bad_rows", "true", "--train.max_steps", "2")
    assert proc.returncode == 0 and "'bad_rows': 1" in proc.stderr + proc.stdout


def test_data_cli_stats_and_show(tmp_path, tiny_model, rows_file):
    cfg = write_config(tmp_path, tiny_model, rows_file)
    stats = subprocess.run([sys.executable, "-m", "ft.data", "stats", "--config", str(cfg), "--data.packing", "true"],
                           capture_output=True, text=True, cwd=REPO)
    assert stats.returncode == 0, stats.stderr[-2000:]
    assert ("token-length histogram" in stats.stdout and "packed" in stats.stdout
            and "train by difficulty" in stats.stdout)
    # the plan this config trains with: rows, optimizer steps per epoch (packing puts several examples a row)
    assert re.search(r"this config's plan: \d+ rows of packed bins, \d+ optimizer steps per epoch", stats.stdout)
    show = subprocess.run([sys.executable, "-m", "ft.data", "show", "-n", "1", "--config", str(cfg)],
                          capture_output=True, text=True, cwd=REPO)
    assert show.returncode == 0 and "### Task" in show.stdout and "<<<LOSS STARTS HERE>>>SELECT" in show.stdout
    bad = subprocess.run([sys.executable, "-m", "ft.data", "stats", "--config", str(cfg), "--lora.rr", "3"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "lora.r" in bad.stderr
