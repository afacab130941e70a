"""Evaluation results out: files, the console table, W&B table rows, and two runs side by side."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from ft.data.rows import Row
from ft.eval.scoring import Prediction
from ft.files import naming
from ft.metrics import COUNTS, EXTRA_RATES, KINDS, RATES, RETRY_RATES, TEST_SUITE, TIMINGS, VOTE_MEANS, VOTE_RATES


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with naming(path):  # a full disk names the file (ft.cli.run says so in one line)
            tmp.write_text(text)  # a plain open(): the file gets the user's umask, as any file they write would
    except OSError:
        tmp.unlink(missing_ok=True)
        raise
    tmp.replace(path)


def write_results(out_dir: str | Path, preds: list[Prediction], metrics: dict, name: str = "") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}_" if name else ""
    pred_path, metrics_path = out_dir / f"{prefix}predictions.jsonl", out_dir / f"{prefix}metrics.json"
    _write_atomic(pred_path, "".join(json.dumps(asdict(p)) + "\n" for p in preds))
    _write_atomic(metrics_path, json.dumps(metrics, indent=2))
    return pred_path, metrics_path


def row_keys(rows: list[Row]) -> list[str]:
    """A stable key per row (database, question, gold SQL, and which repeat of them it is)."""
    seen: Counter = Counter()
    keys = []
    for r in rows:
        base = hashlib.sha1(json.dumps([r.db_id, r.question, r.query]).encode()).hexdigest()[:16]
        keys.append(f"{base}-{seen[base]}")
        seen[base] += 1
    return keys


# The eval.* keys that change what an evaluation answers: a logged evaluation continues only under the same ones.
RESULT_KEYS = ("max_new_tokens", "timeout_s", "max_rows", "retries", "samples", "temperature", "top_p", "constrain",
               "float_tolerance", "test_suite", "test_suite_seed")


def result_settings(e) -> dict:
    """The RESULT_KEYS of an EvalConfig, for PredictionLog's `settings`."""
    return {k: getattr(e, k) for k in RESULT_KEYS}


class PredictionLog:
    """`<folder>/<name>_predictions.jsonl` appended batch by batch, `<name>_metrics.json` when the evaluation ends.

    An interrupted evaluation keeps what it finished; the next one of the same rows with the same `settings`
    continues from it (`todo`), and a finished one is reused whole (`complete`). Other settings start afresh.
    """

    def __init__(self, folder: str | Path | None, name: str, rows: list[Row], settings: dict, enabled: bool = True):
        """`folder` None: in memory only (a periodic evaluation's sample)."""
        enabled = enabled and folder is not None
        self.folder, self.name, self.rows = Path(folder or "."), name, rows
        self.settings, self.enabled = settings, enabled
        prefix = f"{name}_" if name else ""
        self.pred_path = self.folder / f"{prefix}predictions.jsonl"
        self.metrics_path = self.folder / f"{prefix}metrics.json"
        self.progress_path = self.folder / f".{prefix}progress.json"
        self.keys = row_keys(rows)
        self.done: dict[int, Prediction] = {}
        self.complete = False
        by_key = {k: i for i, k in enumerate(self.keys)}
        try:
            progress = json.loads(self.progress_path.read_text()) if folder is not None else None
        except (OSError, ValueError):
            progress = None
        if progress is not None and progress.get("settings") == settings and self.pred_path.is_file():
            fields = {f.name for f in dataclasses.fields(Prediction)}
            for line in self.pred_path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line cut by a kill
                if rec.get("key") in by_key:
                    self.done[by_key[rec["key"]]] = Prediction(**{k: v for k, v in rec.items() if k in fields})
            self.complete = bool(progress.get("complete")) and len(self.done) == len(rows)
        elif enabled:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.pred_path.write_text("")
            _write_atomic(self.progress_path, json.dumps({"settings": settings, "complete": False}))

    @property
    def todo(self) -> list[int]:
        return [i for i in range(len(self.rows)) if i not in self.done]

    def append(self, scored: list[tuple[int, Prediction]]) -> None:
        """Predictions of the rows at these indices of `rows`, written at once (one line each)."""
        for i, p in scored:
            self.done[i] = p
        if self.enabled and scored:
            with naming(self.pred_path), open(self.pred_path, "a") as f:
                f.write("".join(json.dumps({"key": self.keys[i]} | asdict(p)) + "\n" for i, p in scored))
                f.flush()

    def predictions(self) -> list[Prediction]:
        return [self.done[i] for i in sorted(self.done)]

    def finish(self, summary: dict) -> Path:
        """Write the metrics (marked complete or not); a complete log is rewritten in row order."""
        self.complete = summary.get("complete", True) and len(self.done) == len(self.rows)
        summary = summary | {"complete": self.complete, "rows": len(self.rows), "settings": self.settings}
        if self.enabled:
            if self.complete:
                _write_atomic(self.pred_path, "".join(json.dumps({"key": self.keys[i]} | asdict(self.done[i])) + "\n"
                                                      for i in sorted(self.done)))
            _write_atomic(self.metrics_path, json.dumps(summary, indent=2))
            _write_atomic(self.progress_path, json.dumps({"settings": self.settings, "complete": self.complete}))
        return self.metrics_path


# EX's 95 % interval is at most ±10 points from this many questions on (1.96 * sqrt(0.25 / n) <= 0.10).
USEFUL_QUESTIONS = 97


def interval_note(n: int, ex: float | None) -> str | None:
    """A plain line when n questions are too few to measure EX: its 95 % (Wilson) interval and the size that would
    do."""
    if n >= USEFUL_QUESTIONS or ex is None or n == 0:
        return None
    z = 1.96
    centre = (ex + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(ex * (1 - ex) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (f"only {n} questions: EX {100 * ex:.1f} % means anywhere from {100 * max(centre - half, 0):.0f} to "
            f"{100 * min(centre + half, 1):.0f} % (95 % interval); {USEFUL_QUESTIONS} questions give ±10 points at "
            "worst, 385 give ±5 (data.eval_fraction / data.eval_source set the held-out split)")


def _pct_row(label: str, results: dict[str, dict], get) -> str:
    cells = []
    for n in results:
        v = get(results[n])
        cells.append(f"{100 * v:>13.1f}%" if isinstance(v, (int, float)) else f"{'-':>14}")
    return f"{label:<30}" + "".join(cells)


def format_table(results: dict[str, dict]) -> str:
    """Console table: one column per model (e.g. base / fine-tuned); rows: counts, rates overall, by kind of
    question (training databases or not), per tier, picking figures, speed."""
    names = list(results)
    lines = [f"{'metric':<30}" + "".join(f"{n:>14}" for n in names)]
    present = lambda keys: [k for k in keys if any(k in results[n] for n in names)]  # noqa: E731
    for k in COUNTS:
        # shown when not zero; the test suite's rejections and the trained-on questions whenever counted (0 says so)
        if k == "n" or any(results[n].get(k) for n in names) or k in present(("ts_rejected", "trained_questions")):
            lines.append(f"{k:<30}" + "".join(f"{results[n].get(k, 0):>14d}" for n in names))
    for k in RATES:
        lines.append(_pct_row(k, results, lambda r, k=k: r.get(k, 0)))
    tol = next((results[n]["float_tolerance"] for n in names if results[n].get("float_tolerance")), None)
    for k in present(EXTRA_RATES):
        label = f"ex_tol (rel. {tol:g})" if k == "ex_tol" and tol else k
        lines.append(_pct_row(label, results, lambda r, k=k: r.get(k)))
    for kind in KINDS:
        if any(kind in results[n].get("kinds", {}) for n in names):
            count = results[names[-1]].get("kinds", {}).get(kind, {}).get("n", 0)
            lines.append(_pct_row(f"ex[{kind}] (n={count})", results,
                                  lambda r, kind=kind: r.get("kinds", {}).get(kind, {}).get("ex")))
    for k in present(RETRY_RATES) + present(VOTE_RATES):
        lines.append(_pct_row(k, results, lambda r, k=k: r.get(k)))
    for k in present(TEST_SUITE):
        cells = []
        for n in names:
            v = results[n].get(k)
            cells.append(f"{'-':>14}" if v is None else f"{100 * v:>13.1f}%" if k == "ts_mutants_killed"
                         else f"{v:>14.2f}" if isinstance(v, float) else f"{v:>14d}")
        lines.append(f"{k:<30}" + "".join(cells))
    for k in present(VOTE_MEANS) + [k for k in TIMINGS if all(k in results[n] for n in names)]:
        lines.append(f"{k:<30}" + "".join(f"{results[n].get(k, 0):>14.2f}" for n in names))
    for t in sorted({t for n in names for t in results[n].get("tiers", {})}):
        label = f"ex[{t}] (n={results[names[0]]['tiers'].get(t, {}).get('n', 0)})"
        lines.append(_pct_row(label, results, lambda r, t=t: r.get("tiers", {}).get(t, {}).get("ex", 0)))
    failed = {db: c for n in names for db, c in results[n].get("gold_failed_by_db", {}).items()}
    if failed:
        lines.append("gold query failed, by database (left out of every rate): "
                     + ", ".join(f"{db} {c}" for db, c in failed.items()))
    for n in names:  # too few questions to measure: said plainly, with the size that would do
        if note := interval_note(results[n].get("n", 0), results[n].get("ex")):
            lines.append(f"{n}: {note}" if len(names) > 1 else note)
    return "\n".join(lines)


def prediction_table_rows(preds: list[Prediction]) -> tuple[list[str], list[list]]:
    cols = ["question", "gold", "predicted", "correct", "error", "tier", "hallucinated"]
    rows = [[p.question, p.gold, p.predicted, p.correct, p.error, p.tier, ", ".join(p.hallucinated)] for p in preds]
    if any(p.correct_ts is not None for p in preds):  # test-suite accuracy beside EX, where it was measured
        cols.append("correct_ts")
        for r, p in zip(rows, preds):
            r.append(p.correct_ts)
    return cols, rows


def predictions_file(path: str | Path) -> Path:
    """A predictions file, or a folder holding one (an evaluation's --out, a run's eval/ folder)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.exists():
        raise FileNotFoundError(f"'{p}' does not exist: give a predictions file (*predictions.jsonl) or the folder "
                                "an evaluation wrote (its --out, or a run's eval/).")
    found = sorted(p.glob("*predictions.jsonl"))
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(f"'{p}' holds no *predictions.jsonl.")
    raise FileNotFoundError(f"'{p}' holds several prediction files ({', '.join(f.name for f in found)}): name one.")


def compare(a_path: str | Path, b_path: str | Path) -> str:
    """Two prediction files side by side, question by question (matched by question text and gold SQL)."""

    def load(path):
        lines = predictions_file(path).read_text().splitlines()
        return {(r["question"], r["gold"]): r for r in (json.loads(line) for line in lines if line.strip())}

    a, b = load(a_path), load(b_path)
    lines, wins, losses = [], 0, 0
    for key in a:
        if key not in b:
            continue
        ra, rb = a[key], b[key]
        mark = "  " if ra["correct"] == rb["correct"] else ("+B" if rb["correct"] else "+A")
        wins += mark == "+B"
        losses += mark == "+A"
        lines.append(f"{mark} [{'x' if ra['correct'] else ' '}|{'x' if rb['correct'] else ' '}] {ra['question']}")
        if mark != "  ":
            lines.append(f"      A: {ra['predicted']}\n      B: {rb['predicted']}\n   gold: {ra['gold']}")
    common = [k for k in a if k in b]
    ex_a = sum(a[k]["correct"] for k in common) / max(len(common), 1)
    ex_b = sum(b[k]["correct"] for k in common) / max(len(common), 1)
    lines.append(f"\n{len(common)} common questions: EX A {100 * ex_a:.1f}%  B {100 * ex_b:.1f}%  "
                 f"(B right where A wrong: {wins}; A right where B wrong: {losses})")
    return "\n".join(lines)
