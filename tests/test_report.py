"""The local run report (python -m ft.report): finished, running and resumed run folders; a real tiny run."""
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

from ft.report import build_report, load_run, main

TRAIN = [sys.executable, str(REPO / "ft" / "train.py")]
TIERS = ("simple", "join", "topk")


# ------------------------------------------------------------------------------------------------
# fixture run folders, written the way ft/tracking.py and ft/eval/output.py write them


def _write_jsonl(path: Path, rows: list[dict], tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)


def _train_record(step: int, loss: float, t0: float = 1.7e9) -> dict:
    return {"step": step, "time": t0 + step, "train/loss": loss, "train/lr": 1e-3 * (1 - step / 40),
            "train/grad_norm": 0.5, "train/epoch": step / 10, "train/examples_seen": 8 * step,
            "perf/tokens_per_s": 1000.0 + step, "perf/target_tokens_per_s": 200.0, "perf/samples_per_s": 4.0,
            "perf/peak_memory_mb": 500.0 + step, "sys/rss_mb": 480.0}


def _summary(ex: float, tiers: dict[str, float]) -> dict:
    return {"n": 6, "ex": ex, "ex_set": ex, "em": ex / 2, "valid": 0.9, "hallucination": 0.1,
            "time_per_question_p50_s": 0.2, "time_per_question_p95_s": 0.3, "questions_per_s": 5.0,
            "tiers": {t: {"n": 2, "ex": v, "ex_set": v, "em": 0.0, "valid": 1.0, "hallucination": 0.0}
                      for t, v in tiers.items()}}


def _prediction(q: str, correct: bool, *, error=None, hallucinated=(), tier="simple", predicted="SELECT 1") -> dict:
    return {"question": q, "gold": f"SELECT gold FROM t -- {q}", "predicted": predicted, "tier": tier, "db_id": "shop",
            "raw_output": predicted, "error": error, "correct": correct, "correct_set": correct,
            "exact_match": False, "valid": error is None, "hallucinated": list(hallucinated),
            "validation_errors": [], "retried": False, "correct_first": correct, "latency_s": 0.1}


def write_finished(run: Path) -> Path:
    records = [{"step": 0, "time": 1.7e9, "perf/trainable_params": 14336, "perf/padding_fraction": 0.1,
                "sys/cpu_count": 2, "sys/world_size": 1, "sys/nodes": 1, "sys/torch": "2.x"}]
    for step in range(2, 21, 2):
        records.append(_train_record(step, 3.0 - 0.1 * step))
        if step % 10 == 0:
            records.append({"step": step, "time": 1.7e9 + step, "eval/loss": 2.5 - 0.05 * step})
            records.append({"step": step, "time": 1.7e9 + step, "eval/ex": step / 40, "eval/valid": 0.8,
                            "eval/em": 0.1, "eval/ex_set": step / 40, "eval/hallucination": 0.1, "eval/n": 6,
                            **{f"eval/tier/{t}/ex": step / 30 for t in TIERS}})
    base, tuned = _summary(0.1, {t: 0.1 for t in TIERS}), _summary(0.5, {"simple": 1.0, "join": 0.5, "topk": 0.0})
    for name, s in (("base", base), ("finetuned", tuned)):
        final = {f"final/{name}/{k}": v for k, v in s.items() if k != "tiers"}
        records.append({"step": 20, "time": 1.7e9 + 21, **final})
    _write_jsonl(run / "metrics.jsonl", records)
    (run / "run.json").write_text(json.dumps({
        "run_id": "abcd1234", "project": "sqlft", "group": "sweep-1", "wandb": False, "git_commit": "0123456789abcdef",
        "git_dirty": False, "config": {"model": {"name_or_path": "tiny"}, "train": {"max_steps": 20},
                                       "tracking": {"run_name": "fixture-run"}},
        "attempts": [{"started": 1.7e9, "resumed": False, "sys/world_size": 1, "sys/cpu_count": 2}]}))
    ev = run / "eval"
    ev.mkdir(parents=True)
    for name, s in (("base", base), ("finetuned", tuned)):
        (ev / f"{name}_metrics.json").write_text(json.dumps(s))
    tuned_preds = [
        _prediction("right one", True),
        _prediction("wrong result", False, tier="join"),
        _prediction("failed to run", False, error="no such function: FOO", tier="topk"),
        _prediction("invented a column", False, error="no such column: c.zip", hallucinated=["c.zip"], tier="join"),
        _prediction("regressed <b>question</b> & more", False, tier="simple"),
    ]
    base_preds = [dict(p, correct=p["question"].startswith("regressed")) for p in tuned_preds]
    _write_jsonl(ev / "finetuned_predictions.jsonl", tuned_preds)
    _write_jsonl(ev / "base_predictions.jsonl", base_preds)
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"x")
    for step in (10, 20):
        d = run / "checkpoints" / f"step-{step:06d}"
        d.mkdir(parents=True)
        (d / "COMPLETED").write_text("ok\n")
    return run


def write_running(run: Path) -> Path:
    """Training: a few steps logged, the last line cut mid-write, no evaluation, no run.json, no adapter."""
    _write_jsonl(run / "metrics.jsonl", [_train_record(s, 3.0 - 0.1 * s) for s in (2, 4, 6)],
                 tail='{"step": 8, "time": 1700000008.0, "train/lo')
    return run


def write_resumed(run: Path) -> Path:
    """Killed after step 12 with its last checkpoint at step 8, then resumed: steps 10 and 12 appear twice."""
    first = [_train_record(s, 3.0 - 0.1 * s) for s in (2, 4, 6, 8, 10, 12)]
    second = [_train_record(s, 9.0 + s, t0=1.8e9) for s in (10, 12, 14, 16)]
    _write_jsonl(run / "metrics.jsonl", first + second)
    (run / "tables" / "eval" / "predictions").mkdir(parents=True)
    cols = ["question", "gold", "predicted", "correct", "error", "tier", "hallucinated"]
    for step, wrong in ((10, "old"), (16, "newest")):
        rows = [["q ok", "SELECT 1", "SELECT 1", True, None, "simple", ""],
                [f"q {wrong}", "SELECT 2", "SELECT x FROM nope", False, "no such table: nope", "join", "nope, x"]]
        table = run / "tables" / "eval" / "predictions" / f"step-{step:06d}.jsonl"
        _write_jsonl(table, [dict(zip(cols, r)) for r in rows])
    return run


# ------------------------------------------------------------------------------------------------
# checks shared by every case


def assert_self_contained(page: str) -> None:
    refs = re.findall(r"""\b(?:src|href|srcset|action|poster)\s*=\s*["']?([^"'\s>]*)""", page, flags=re.I)
    assert refs, "no images embedded"
    assert all(r.startswith(("data:", "#")) for r in refs), [r[:40] for r in refs if not r.startswith(("data:", "#"))]
    assert not re.search(r"<(script|link|iframe|object|embed)\b", page, flags=re.I)
    assert not re.search(r"url\(|@import", page)


def embedded_pngs(page: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def build(run: Path) -> tuple[Path, str]:
    out = build_report(run)
    assert out == run / "report" / "report.html"
    page = out.read_text(encoding="utf-8")
    assert_self_contained(page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    # every embedded plot is also a PNG file next to the page, byte for byte
    pngs = embedded_pngs(page)
    files = sorted(out.parent.glob("*.png"))
    assert len(pngs) == len(files) > 0
    assert sorted(pngs) == sorted(f.read_bytes() for f in files)
    assert all(p.startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    return out, page


# ------------------------------------------------------------------------------------------------


def test_finished_run(tmp_path):
    out, page = build(write_finished(tmp_path / "run"))
    for section in ('id="execution"', 'id="training"', 'id="throughput"', 'id="predictions"', "<h2>Run</h2>"):
        assert section in page
    for fig in ("loss", "learning_rate", "grad_norm", "throughput", "memory", "eval_execution", "eval_tiers",
                "final_tiers"):
        assert f'id="fig-{fig}"' in page and (out.parent / f"{fig}.png").is_file(), fig
    assert "fixture-run" in page and "finished" in page and "step 20 of 20" in page
    assert "abcd1234" in page and "0123456789ab" in page and "group sweep-1" in page
    # base vs fine-tuned table with per-tier rows and the change
    assert "fine-tuned" in page and "ex [join]" in page and "+40.0 pt" in page
    # no MFU on this (CPU) run, and the page says why
    assert "No MFU" in page and "mfu.png" not in {p.name for p in out.parent.iterdir()}
    # the worst predictions: regression first, then hallucination, then execution error, then wrong result
    order = [page.index(f"<td>{q}</td>") for q in ("regressed &lt;b&gt;question&lt;/b&gt; &amp; more",
                                                    "invented a column", "failed to run", "wrong result")]
    assert order == sorted(order)
    assert "<b>question</b>" not in page  # escaped
    assert "right one" not in page.split('id="predictions"')[1]
    assert "regression: base was right" in page and "c.zip" in page and "no such function: FOO" in page
    assert "4 wrong of 5 answers" in page


def test_running_run_without_eval(tmp_path):
    run = write_running(tmp_path / "run")
    out, page = build(run)
    assert "in progress or stopped" in page
    assert "No execution evaluation yet" in page and "No predictions yet" in page
    assert "could not be read" in page  # the torn last line is reported, not fatal
    assert (out.parent / "loss.png").is_file() and not (out.parent / "final_tiers.png").exists()
    assert load_run(run).last_step == 6


def test_just_started_run_folder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    out = build_report(run)
    page = out.read_text()
    assert "No metrics.jsonl yet" in page and "no step logged yet" in page
    assert not list(out.parent.glob("*.png"))


def test_resumed_run_later_record_wins(tmp_path):
    run = write_resumed(tmp_path / "run")
    data = load_run(run)
    assert data.series["train/loss"][10] == 19.0 and data.series["train/loss"][12] == 21.0  # the resumed attempt's
    assert data.series["train/loss"][8] == pytest.approx(2.2)
    assert sorted(data.series["train/loss"]) == [2, 4, 6, 8, 10, 12, 14, 16]
    assert data.restarts == [(12, 10)]
    out, page = build(run)
    assert "Resumed 1 time(s) (from step 12 back to 10)" in page
    # without a final evaluation the latest periodic table is shown
    assert "periodic evaluation sample at step 16" in page and "q newest" in page and "q old" not in page
    assert "nope" in page and "no such table: nope" in page


def test_cli(tmp_path, capsys):
    run = write_finished(tmp_path / "run")
    html_out = tmp_path / "elsewhere" / "r.html"
    assert main([str(run), "--out", str(html_out), "--max-predictions", "2"]) == 0
    assert str(html_out.resolve()) in capsys.readouterr().out
    page = html_out.read_text()
    assert "the 2 shown are" in page and (html_out.parent / "loss.png").is_file()
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------
# a real tiny training run, killed-and-resumed, with W&B offline (shared with tests/test_dashboard.py)

_REAL: dict = {}


def real_run(tmp_path_factory, tiny_model, rows_file) -> dict:
    """Train 16 steps (checkpoints every 4), "kill" it by removing what came after step 8, resume to 20 steps.

    Returns the run folder and what each attempt left. Built once per test session.
    """
    if _REAL:
        return _REAL
    import shutil

    import yaml
    from helpers import write_config

    root = tmp_path_factory.mktemp("real-run")
    cfg = write_config(root, tiny_model, rows_file,
                       train={"max_steps": 16, "log_every": 2},
                       checkpoint={"every": 4, "keep_last": 10},
                       tracking={"wandb": True, "project": "t", "group": "g1", "run_name": "tiny"},
                       eval={"loss_every": 4, "loss_batches": 1, "at_end": True, "every": 8, "sample_size": 4,
                             "max_new_tokens": 12, "batch_size": 4},
                       data={"eval_fraction": 0.4})
    env = {"WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}

    def train(*extra):
        import os

        proc = subprocess.run(TRAIN + ["--config", str(cfg), *extra], capture_output=True, text=True,
                              env=os.environ | env, timeout=600)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    train()
    run = root / "run"
    first_wandb = set((run / "wandb").glob("offline-run-*"))
    # as if killed after step 16 was logged but with the newest checkpoint at step 8
    for d in (run / "checkpoints").glob("step-*"):
        if int(d.name.split("-")[1]) > 8:
            shutil.rmtree(d)
    shutil.rmtree(run / "adapter")
    shutil.rmtree(run / "eval")
    train("--train.max_steps", "20")
    second_wandb = set((run / "wandb").glob("offline-run-*")) - first_wandb
    assert len(first_wandb) == 1 and len(second_wandb) == 1
    _REAL.update(run=run, wandb=[first_wandb.pop(), second_wandb.pop()], config=yaml.safe_load(cfg.read_text()))
    return _REAL


@pytest.fixture
def real(tmp_path_factory, tiny_model, shop_rows_file):
    # rows with a database: execution metrics are only reported for questions whose gold query ran
    return real_run(tmp_path_factory, tiny_model, shop_rows_file)


def test_real_resumed_run(real):
    run = real["run"]
    data = load_run(run)
    assert data.restarts and data.restarts[0][0] == 16 and data.restarts[0][1] <= 10
    assert max(data.series["train/loss"]) == 20
    assert data.final.keys() == {"base", "finetuned"} and data.predictions
    info = json.loads((run / "run.json").read_text())
    assert [a["resumed"] for a in info["attempts"]] == [False, True] and info["run_id"]
    out, page = build(run)
    assert "finished" in page and "Resumed 1 time(s)" in page and "tiny" in page
    for fig in ("loss", "learning_rate", "throughput", "memory", "eval_execution", "final_tiers"):
        assert (out.parent / f"{fig}.png").is_file(), fig


def test_run_facts_name_the_batching(tmp_path):
    from ft.report import RunData, _run_facts

    def data_fact(**data):
        run = RunData(run_dir=tmp_path, config={"data": {"source": "bundled", "max_length": 1024, **data}})
        return dict(_run_facts(run))["data"]

    assert data_fact(packing=False).endswith("padded rows)")
    assert data_fact(packing=True).endswith(", packing)")
    # prefix sharing sets packing false in the config yet packs rows; the report must not say "no packing"
    assert data_fact(packing=False, prefix_sharing=True).endswith("shared-schema prefix packing)")
