"""Evaluation results out: files, the console table, W&B table rows, and two runs side by side."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ft.eval.scoring import Prediction
from ft.metrics import RATES, RETRY_RATES, TIMINGS


def write_results(out_dir: str | Path, preds: list[Prediction], metrics: dict, name: str = "") -> tuple[Path, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}_" if name else ""
    pred_path, metrics_path = out_dir / f"{prefix}predictions.jsonl", out_dir / f"{prefix}metrics.json"
    tmp = pred_path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(asdict(p)) + "\n" for p in preds))
    tmp.replace(pred_path)
    tmp = metrics_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(metrics_path)
    return pred_path, metrics_path


def format_table(results: dict[str, dict]) -> str:
    """Console table: one column per model (e.g. base / fine-tuned), rows = overall and per-tier metrics."""
    names = list(results)
    lines = [f"{'metric':<28}" + "".join(f"{n:>14}" for n in names)]
    keys = list(RATES) + [k for k in RETRY_RATES if any(k in results[n] for n in names)]
    for k in keys:
        lines.append(f"{k:<28}" + "".join(f"{100 * results[n].get(k, 0):>13.1f}%" for n in names))
    for k in TIMINGS:
        if all(k in results[n] for n in names):
            lines.append(f"{k:<28}" + "".join(f"{results[n][k]:>14.2f}" for n in names))
    tiers = sorted({t for n in names for t in results[n].get("tiers", {})})
    for t in tiers:
        label = f"ex[{t}] (n={results[names[0]]['tiers'].get(t, {}).get('n', 0)})"
        lines.append(f"{label:<28}" + "".join(f"{100 * results[n]['tiers'].get(t, {}).get('ex', 0):>13.1f}%" for n in names))
    return "\n".join(lines)


def prediction_table_rows(preds: list[Prediction]) -> tuple[list[str], list[list]]:
    cols = ["question", "gold", "predicted", "correct", "error", "tier", "hallucinated"]
    return cols, [[p.question, p.gold, p.predicted, p.correct, p.error, p.tier, ", ".join(p.hallucinated)] for p in preds]


def compare(a_path: str | Path, b_path: str | Path) -> str:
    """Two prediction files side by side, question by question (matched by question text and gold SQL)."""

    def load(path):
        path = Path(path)
        if path.is_dir():
            path = path / "predictions.jsonl"
        return {(r["question"], r["gold"]): r for r in map(json.loads, path.read_text().splitlines())}

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
