"""`sqlft eval` says what it evaluates and scores anyone's SQL: every row of --data unless --limit, "N of M
questions" and why, questions the adapter was trained on apart, results of other models never replaced, SQL from a
file scored without a model under the same rules (test suite included), and a stop answered within a generation
step with every finished answer kept."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO
from test_train import run, write_config

EVAL = [sys.executable, "-m", "ft.eval"]


def sqlft_eval(*args, timeout=600):
    return subprocess.run(EVAL + [str(a) for a in args], capture_output=True, text=True, cwd=REPO, timeout=timeout,
                          env=os.environ | {"WANDB_MODE": "offline"})


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------------------------------------
# SQL from anyone, no model


def test_predictions_file_is_scored_without_a_model(tmp_path, shop_rows_file):
    rows = rows_of(shop_rows_file)
    preds = tmp_path / "preds.jsonl"
    lines = []
    for i, r in enumerate(rows):
        sql = r["query"] if i % 2 == 0 else "SELECT 1"
        lines.append({"question": r["question"], "db_id": "shop", "predicted": sql} if i % 3 else
                     {"question": r["question"].upper(), "predicted": sql})
    preds.write_text("".join(json.dumps(x) + "\n" for x in lines[:-1]))  # the last question has no answer
    ev = sqlft_eval("--predictions", preds, "--data", shop_rows_file, "--out", tmp_path / "ev")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert f"evaluating {len(rows)} of {len(rows)} questions" in ev.stderr
    assert "1 of 24 questions have no answer" in ev.stderr and "scored: SQL from" in ev.stdout
    (metrics,) = (tmp_path / "ev").glob("*metrics.json")
    m = json.loads(metrics.read_text())
    assert m["n"] == len(rows) and m["ex"] == pytest.approx(12 / 24)
    # one SQL a line in the dataset's order, as Spider's evaluator takes it; the same score
    text = tmp_path / "preds.sql"
    text.write_text("".join((r["query"] if i % 2 == 0 else "SELECT 1") + "\tshop\n" for i, r in enumerate(rows)))
    ev = sqlft_eval("--predictions", text, "--data", shop_rows_file, "--out", tmp_path / "ev2",
                    "--eval.test_suite", "3", "--eval.test_suite_cache", tmp_path / "ts")
    assert ev.returncode == 0, ev.stderr[-3000:]
    (metrics,) = (tmp_path / "ev2").glob("*metrics.json")
    m = json.loads(metrics.read_text())
    assert m["ex"] == pytest.approx(12 / 24) and "ts" in m and "ts_rejected" in m and "ts_rejected" in ev.stdout
    # bad input: one line naming the file and line, exit 2, nothing written over
    text.write_text("SELECT 1\n")
    bad = sqlft_eval("--predictions", text, "--data", shop_rows_file, "--out", tmp_path / "ev")
    assert bad.returncode == 2 and "1 SQL lines for 24 questions" in bad.stderr and "Traceback" not in bad.stderr
    preds.write_text(json.dumps({"question": rows[0]["question"], "predicted": "SELECT 1"}) + "\n{oops\n")
    bad = sqlft_eval("--predictions", preds, "--data", shop_rows_file, "--out", tmp_path / "ev")
    assert bad.returncode == 2 and f"{preds}:2" in bad.stderr
    preds.write_text(json.dumps({"question": "Who?", "predicted": "SELECT 1"}) + "\n")
    bad = sqlft_eval("--predictions", preds, "--data", shop_rows_file, "--out", tmp_path / "ev")
    assert bad.returncode == 2 and "not in the dataset" in bad.stderr
    assert json.loads(metrics.read_text())["ex"] == pytest.approx(12 / 24)


def test_a_limit_above_what_exists_says_so(tmp_path, shop_rows_file):
    preds = tmp_path / "p.sql"
    preds.write_text("SELECT 1\n" * 24)
    ev = sqlft_eval("--predictions", preds, "--data", shop_rows_file, "--limit", "100", "--out", tmp_path / "ev")
    assert ev.returncode == 0 and "--limit 100 is more than the 24 questions there are" in ev.stderr
    ev = sqlft_eval("--predictions", preds, "--data", shop_rows_file, "--limit", "5", "--out", tmp_path / "ev")
    assert ev.returncode == 0 and "evaluating 5 of 24 questions" in ev.stderr
    assert "only 5 questions: EX" in ev.stdout  # too few to measure, said plainly with the size that would do


# ------------------------------------------------------------------------------------------------
# an adapter: all rows, trained questions apart, one result per model


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, tiny_model, shop_rows_file):
    tmp = tmp_path_factory.mktemp("evalcli")
    # the run's config caps its held-out evaluation (as the demo's does): --data must not inherit that cap
    run(write_config(tmp, tiny_model, shop_rows_file, train={"max_steps": 2}, data={
        "source": str(shop_rows_file), "eval_fraction": 0.25, "max_length": 256, "max_eval_rows": 3}))
    return tmp / "run" / "adapter"


@pytest.mark.slow
def test_adapter_evaluation_says_what_it_scored(adapter, shop_rows_file):
    ev = sqlft_eval("--adapter", adapter, "--data", shop_rows_file, "--max-new-tokens", "4", "--batch-size", "24")
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert "evaluating 24 of 24 questions" in ev.stderr  # every row of --data: the run's cap of 3 is not inherited
    folder = adapter.parent / "eval"
    (served,) = folder.glob("eval-rows__*__served_metrics.json")
    m = json.loads(served.read_text())
    assert "as served" in m["scored_model"] and "scored: " in ev.stdout and m["questions"] == 24
    # 18 of the 24 rows were the run's training rows: recognised and reported apart, never as unseen questions
    assert m["trained_questions"] == 18 and m["kinds"]["trained"]["n"] == 18
    assert sum(k["n"] for name, k in m["kinds"].items() if name != "trained") == 6
    # the same data through the model as trained: a file of its own, the first one kept
    ev = sqlft_eval("--adapter", adapter, "--data", shop_rows_file, "--max-new-tokens", "4", "--batch-size", "24",
                    "--as", "trained")
    assert ev.returncode == 0, ev.stderr[-3000:]
    (trained,) = folder.glob("eval-rows__*__trained_metrics.json")
    assert served.is_file() and "as trained" in json.loads(trained.read_text())["scored_model"]
    # the run's own held-out split (no --data): its cap applies and the reason is printed
    ev = sqlft_eval("--adapter", adapter, "--max-new-tokens", "4")
    assert ev.returncode == 0 and "evaluating 3 of 6 questions" in ev.stderr and "data.max_eval_rows 3" in ev.stderr


def test_a_stop_between_generation_steps_ends_the_batch_and_keeps_the_done_ones(tiny_model, shop_rows_file):
    # In process, deterministic: the stop is asked at every new token; once it says stop, the batch being generated
    # ends at the next step, its answers are dropped (unfinished), the finished batches come back.
    import torch
    from transformers import AutoModelForCausalLM

    from ft.config import EvalConfig
    from ft.data.sources import load_source
    from ft.eval.scoring import evaluate
    from ft.model import load_tokenizer

    rows = load_source(str(shop_rows_file))[:6]
    tok = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32)
    steps, batches = [], []
    stop_at = 5  # the 5th token of the second batch

    def interrupt():
        steps.append(len(batches))
        return len(batches) == 1 and steps.count(1) >= stop_at

    preds, m = evaluate(model, tok, rows, EvalConfig(batch_size=3, max_new_tokens=40), interrupt=interrupt,
                        on_batch=lambda scored: batches.append(scored))
    assert [len(b) for b in batches] == [3, 0] and len(preds) == 3 and m["complete"] is False
    assert steps.count(1) == stop_at  # not one token more: the batch did not run on to 40 tokens
    assert steps.count(0) > stop_at  # the first batch ran to its end (a negative control of the count)


@pytest.mark.slow
def test_sigterm_during_a_long_batch_exits_at_once(tmp_path, tiny_model, shop_rows_file):
    # one batch of all 24 questions, 1,700 new tokens each (a random model rarely stops): SIGTERM once it generates
    import threading

    proc = subprocess.Popen(EVAL + ["--model", str(tiny_model), "--data", str(shop_rows_file), "--batch-size", "24",
                                    "--max-new-tokens", "1700", "--as", "trained", "--quantization", "none",
                                    "--out", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.time() + 400
    while "batch: token" not in "".join(err) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    t_stop = time.time()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    latency = time.time() - t_stop
    reader.join(timeout=10)
    text = "".join(err)
    assert proc.returncode == 75, text[-3000:]
    assert "0 of 24 questions evaluated and kept" in text and latency < 20, latency
    tokens = [int(t) for t in __import__("re").findall(r"token (\d+)/1700", text)]
    assert tokens and max(tokens) < 1700  # it stopped in the middle of the batch
