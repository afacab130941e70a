"""A fine-tune at a glance, without W&B: one self-contained HTML page from a run folder.

    python -m ft.report RUN_DIR [--out RUN_DIR/report/report.html] [--max-predictions 30]

Reads what training writes locally (ft/tracking.py, ft/eval/output.py): metrics.jsonl, run.json, eval/*_metrics.json
and *_predictions.jsonl, tables/*/predictions/step-*.jsonl, checkpoints/step-*/. Writes the page with its plots
embedded as base64 PNGs, and the same PNGs next to it. Works on a finished run, on a run still training (a torn
last line and a missing evaluation are fine: the page says what is not there yet) and on a resumed run (steps
replayed after a resume appear twice in metrics.jsonl: the later record wins).
"""
from __future__ import annotations

import base64
import html
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ft.cli import Command, run
from ft.metrics import (
    COUNTS,
    EXTRA_RATES,
    KINDS,
    LOWER_IS_BETTER,
    RATES,
    RETRY_RATES,
    TEST_SUITE,
    TIMINGS,
    VOTE_MEANS,
    VOTE_RATES,
)

_TIER = re.compile(r"^eval/tier/(?P<tier>[^/]+)/(?P<metric>[^/]+)$")


# ------------------------------------------------------------------------------------------------
# reading a run folder


@dataclass
class RunData:
    run_dir: Path
    series: dict[str, dict[int, float]] = field(default_factory=dict)  # metric -> {step: value}, later record wins
    static: dict[str, object] = field(default_factory=dict)  # non-numeric values (sys/gpu_name, ...), last seen
    records: int = 0
    torn_lines: int = 0
    restarts: list[tuple[int, int]] = field(default_factory=list)  # (step before, step after) where steps went back
    first_time: float | None = None
    last_time: float | None = None
    run_info: dict = field(default_factory=dict)  # run.json
    config: dict = field(default_factory=dict)
    checkpoints: list[int] = field(default_factory=list)
    final: dict[str, dict] = field(default_factory=dict)  # "base" / "finetuned" -> summary (eval/*_metrics.json)
    predictions: list[dict] = field(default_factory=list)
    predictions_source: str | None = None
    base_correct: dict[tuple[str, str], bool] = field(default_factory=dict)

    @property
    def last_step(self) -> int | None:
        steps = [s for v in self.series.values() for s in v]
        return max(steps) if steps else None

    def last(self, key: str):
        s = self.series.get(key)
        return s[max(s)] if s else None

    @property
    def finished(self) -> bool:
        """The final adapter is written last; one older than the latest (re)start is a previous attempt's."""
        adapter = self.run_dir / "adapter"
        if not (adapter / "adapter_model.safetensors").is_file():
            return False
        attempts = self.run_info.get("attempts") or []
        started = attempts[-1].get("started") if attempts else None
        return not isinstance(started, (int, float)) or adapter.stat().st_ctime >= started


def _jsonl(path: Path) -> tuple[list[dict], int]:
    """Parsed lines and the number that did not parse (a line being written, or cut by a kill)."""
    rows, bad = [], 0
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:
                bad += 1
    return rows, bad


def read_metrics(run: RunData) -> None:
    path = run.run_dir / "metrics.jsonl"
    if not path.is_file():
        return
    records, run.torn_lines = _jsonl(path)
    prev = -1
    for rec in records:
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), (int, float)):
            run.torn_lines += 1
            continue
        step = int(rec["step"])
        if step < prev:  # within one attempt steps never go back: a resume from an earlier checkpoint
            run.restarts.append((prev, step))
        prev = step
        run.records += 1
        t = rec.get("time")
        if isinstance(t, (int, float)):
            run.first_time = t if run.first_time is None else min(run.first_time, t)
            run.last_time = t if run.last_time is None else max(run.last_time, t)
        for k, v in rec.items():
            if k in ("step", "time"):
                continue
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                run.series.setdefault(k, {})[step] = float(v)
            elif isinstance(v, (str, bool)):
                run.static[k] = v


def _newest_checkpoint_config(run_dir: Path) -> dict:
    import yaml

    for d in sorted((run_dir / "checkpoints").glob("step-*"), reverse=True):
        if (d / "COMPLETED").is_file() and (d / "config.yaml").is_file():
            try:
                return yaml.safe_load((d / "config.yaml").read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
    return {}


def _prediction_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        hall = r.get("hallucinated") or []
        if isinstance(hall, str):  # a table row: names joined with ", "
            hall = [h for h in (x.strip() for x in hall.split(",")) if h]
        out.append({"question": r.get("question", ""), "gold": r.get("gold", ""), "predicted": r.get("predicted", ""),
                    "correct": bool(r.get("correct")), "error": r.get("error"), "tier": r.get("tier"),
                    "hallucinated": list(hall), "validation_errors": list(r.get("validation_errors") or []),
                    "db_id": r.get("db_id")})
    return out


def _latest_table(run_dir: Path, name: str) -> Path | None:
    files = sorted((run_dir / "tables" / name).glob("step-*.jsonl"))
    return files[-1] if files else None


def load_run(run_dir: str | Path) -> RunData:
    run = RunData(Path(run_dir))
    read_metrics(run)
    info_path = run.run_dir / "run.json"
    if info_path.is_file():
        try:
            run.run_info = json.loads(info_path.read_text())
        except (OSError, ValueError):
            run.run_info = {}
    run.config = run.run_info.get("config") or _newest_checkpoint_config(run.run_dir)
    root = run.run_dir / "checkpoints"
    if root.is_dir():
        run.checkpoints = sorted(int(m.group(1)) for d in root.iterdir()
                                 if (m := re.match(r"^step-(\d+)$", d.name)) and (d / "COMPLETED").is_file())
    # Training's own evaluations (base_, finetuned_), and any `sqlft eval` of the run's adapter (eval*_).
    for p in sorted((run.run_dir / "eval").glob("*metrics.json")):
        name = p.name.removesuffix("metrics.json").rstrip("_") or "eval"
        try:
            run.final[name] = json.loads(p.read_text())
        except (OSError, ValueError):
            pass
    if not run.final:  # eval files missing (e.g. not the main process's disk): the logged final/* keys
        for name in ("base", "finetuned"):
            pre = f"final/{name}/"
            vals = {k[len(pre):]: run.last(k) for k in run.series if k.startswith(pre)}
            if vals:
                tiers: dict[str, dict] = {}
                for k in [k for k in vals if k.startswith("tier/")]:
                    _, tier, m = k.split("/", 2)
                    tiers.setdefault(tier, {})[m] = vals.pop(k)
                run.final[name] = vals | {"tiers": tiers}
    finetuned = run.run_dir / "eval" / "finetuned_predictions.jsonl"
    candidates = [(finetuned, "held-out split, fine-tuned model (end of training)")]
    if (t := _latest_table(run.run_dir, "final/predictions")) is not None:
        candidates.append((t, "held-out split, end of training"))
    if (t := _latest_table(run.run_dir, "eval/predictions")) is not None:
        candidates.append((t, f"periodic evaluation sample at step {int(t.stem.split('-')[1])}"))
    for path, label in candidates:
        if path.is_file():
            run.predictions = _prediction_rows(_jsonl(path)[0])
            run.predictions_source = f"{label} ({path.relative_to(run.run_dir)})"
            break
    base = run.run_dir / "eval" / "base_predictions.jsonl"
    if base.is_file():
        run.base_correct = {(r.get("question"), r.get("gold")): bool(r.get("correct")) for r in _jsonl(base)[0]}
    return run


# ------------------------------------------------------------------------------------------------
# plots


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 9, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
                         "axes.spines.right": False, "figure.dpi": 100})
    return plt


def _xy(series: dict[int, float]) -> tuple[list[int], list[float]]:
    steps = sorted(series)
    return steps, [series[s] for s in steps]


def _line_plot(run: RunData, keys: list[tuple[str, str]], title: str, ylabel: str, *, pct: bool = False,
               logy: bool = False):
    present = [(k, label) for k, label in keys if run.series.get(k)]
    if not present:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.2, 3.1))
    for k, label in present:
        x, y = _xy(run.series[k])
        if pct:
            y = [100 * v for v in y]
        few = len(x) <= 12
        ax.plot(x, y, label=label, marker="o" if few else None, markersize=3.5, linewidth=1.5)
    ax.set_title(title)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(ylabel)
    if pct:
        ax.set_ylim(-2, 102)
    values = [v for k, _ in present for v in run.series[k].values()]
    if logy and min(values) > 0 and max(values) / min(values) > 20:  # a loss falling by orders of magnitude
        from matplotlib.ticker import FuncFormatter

        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if len(present) > 1:
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _throughput_plot(run: RunData):
    fig = _line_plot(run, [("perf/tokens_per_s", "tokens/s (prompt + answer)"),
                           ("perf/target_tokens_per_s", "target tokens/s (answer)")],
                     "Throughput (all processes)", "tokens / s")
    if fig is None:
        return None
    samples = run.series.get("perf/samples_per_s")
    if samples:
        ax = fig.axes[0]
        ax2 = ax.twinx()
        x, y = _xy(samples)
        ax2.plot(x, y, color="tab:gray", linestyle=":", linewidth=1.2, label="samples/s")
        ax2.set_ylabel("samples / s")
        ax2.grid(False)
        ax2.spines["right"].set_visible(True)
        ax2.spines["top"].set_visible(False)
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [ln.get_label() for ln in lines], fontsize=8, frameon=False)
        fig.tight_layout()
    return fig


def _tier_curves(run: RunData):
    keys = sorted(k for k in run.series if (m := _TIER.match(k)) and m["metric"] == "ex")
    return _line_plot(run, [(k, _TIER.match(k)["tier"]) for k in keys], "Execution accuracy per tier (periodic)",
                      "EX %", pct=True)


def _final_bars(run: RunData):
    if not run.final:
        return None
    plt = _plt()
    names = [n for n in ("base", "finetuned") if n in run.final]
    tiers = sorted({t for n in names for t in run.final[n].get("tiers", {})})
    groups = ["overall"] + tiers
    fig, ax = plt.subplots(figsize=(max(6.2, 0.9 * len(groups) + 2), 3.1))
    width = 0.8 / len(names)
    colors = {"base": "#9aa5b1", "finetuned": "#2f6fde"}
    for i, n in enumerate(names):
        vals = [run.final[n].get("ex", 0.0)] + [run.final[n].get("tiers", {}).get(t, {}).get("ex", 0.0) for t in tiers]
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        bars = ax.bar(xs, [100 * v for v in vals], width, label="fine-tuned" if n == "finetuned" else n,
                      color=colors[n])
        for b, v in zip(bars, vals):
            ax.annotate(f"{100 * v:.0f}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                        va="bottom", fontsize=7, xytext=(0, 1), textcoords="offset points")
    n_per = {t: run.final[names[-1]].get("tiers", {}).get(t, {}).get("n") for t in tiers}
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"overall\n(n={run.final[names[-1]].get('n', '?')})"]
                       + [f"{t}\n(n={n_per[t]})" if n_per[t] else t for t in tiers], fontsize=8)
    ax.set_ylim(0, 108)
    ax.set_ylabel("EX %")
    ax.set_title("Execution accuracy on the held-out split, per tier")
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    ax.grid(axis="x", visible=False)
    fig.tight_layout()
    return fig


def make_figures(run: RunData) -> list[tuple[str, str, object]]:
    """(file stem, caption, figure) for every plot there is data for."""
    rates = [(f"eval/{k}", label) for k, label in RATES.items()]
    specs = [
        ("loss", "Training loss (token mean over each logging window) and held-out loss",
         _line_plot(run, [("train/loss", "train"), ("eval/loss", "eval")], "Loss", "cross-entropy / token",
                    logy=True)),
        ("learning_rate", "Learning rate schedule",
         _line_plot(run, [("train/lr", "learning rate")], "Learning rate", "lr")),
        ("grad_norm", "Gradient norm before clipping",
         _line_plot(run, [("train/grad_norm", "grad norm")], "Gradient norm", "L2 norm")),
        ("throughput", "Throughput over each logging window, padding excluded",
         _throughput_plot(run)),
        ("mfu", "Model FLOPs utilization (6·N·tokens/s over the GPUs' dense BF16 peak)",
         _line_plot(run, [("perf/mfu", "MFU")], "MFU", "MFU %", pct=True)),
        ("memory", "Memory: peak allocated (GPU, or process peak RSS on CPU) and current process RSS",
         _line_plot(run, [("perf/peak_memory_mb", "peak memory"), ("sys/rss_mb", "process RSS"),
                          ("sys/gpu_reserved_mb", "GPU reserved")], "Memory", "MiB")),
        ("eval_execution", "Periodic execution evaluation on a fixed sample of held-out questions",
         _line_plot(run, rates, "Execution metrics (periodic)", "%", pct=True)),
        ("eval_tiers", "Periodic execution accuracy per difficulty tier", _tier_curves(run)),
        ("final_tiers", "End of training: base vs fine-tuned, per tier", _final_bars(run)),
        # train.objective grpo
        ("grpo_rollouts", "GRPO: mean reward of the sampled completions, their execution accuracy, and the share of "
         "groups whose rewards were all equal (no gradient)",
         _line_plot(run, [("grpo/reward_mean", "reward mean"), ("grpo/sample_ex", "sample EX"),
                          ("grpo/zero_variance_groups", "zero-variance groups")], "GRPO rollouts", "reward / share")),
        ("grpo_time", "GRPO: seconds per step sampling, executing (rewards) and updating",
         _line_plot(run, [("perf/generation_s", "generation"), ("perf/reward_s", "rewards"),
                          ("perf/update_s", "update")], "GRPO step time", "s / step")),
    ]
    return [(stem, caption, fig) for stem, caption, fig in specs if fig is not None]


# ------------------------------------------------------------------------------------------------
# HTML

CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1240px;color:#1d2430;
padding:0 16px;background:#fafbfc}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 10px;border-bottom:1px solid #d9dee5;
padding-bottom:4px} .sub{color:#5b6675;font-size:13px}
.status{display:inline-block;padding:2px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.finished{background:#2e8540} .running{background:#d98c00}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:14px 0}
.card{background:#fff;border:1px solid #d9dee5;border-radius:6px;padding:8px 12px;min-width:120px}
.card .v{font-size:18px;font-weight:600} .card .k{font-size:11px;color:#5b6675;text-transform:uppercase}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px}
figure{margin:0;background:#fff;border:1px solid #d9dee5;border-radius:6px;padding:8px}
figure img{width:100%;height:auto} figure table{width:100%} figcaption{font-size:12px;color:#5b6675;margin-top:4px}
table{border-collapse:collapse;font-size:12.5px;background:#fff} th,td{border:1px solid #d9dee5;padding:4px 7px;
text-align:left;vertical-align:top} th{background:#eef1f5} td.n{text-align:right;font-variant-numeric:tabular-nums}
.note{background:#fff7e0;border:1px solid #f0d48a;border-radius:6px;padding:8px 12px;margin:8px 0;font-size:13px}
code,.sql{font-family:SFMono-Regular,Menlo,Consolas,monospace;font-size:12px} .sql{white-space:pre-wrap;
word-break:break-word} .err{color:#b3261e} .tag{display:inline-block;background:#eef1f5;border-radius:4px;
padding:0 5px;margin:1px;font-size:11px} .kv td:first-child{color:#5b6675}
.up{color:#2e8540;font-weight:600} .down{color:#b3261e;font-weight:600}
"""


def _e(x) -> str:
    return html.escape("" if x is None else str(x))


def _fmt(v, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{100 * v:.1f}%"
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return f"{int(v):,}"


def _ago(t: float | None) -> str:
    if t is None:
        return "–"
    s = max(0, time.time() - t)
    return f"{s:.0f} s ago" if s < 120 else f"{s / 60:.0f} min ago" if s < 7200 else f"{s / 3600:.1f} h ago"


def _png(fig, path: Path) -> str:
    plt = _plt()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return base64.b64encode(path.read_bytes()).decode("ascii")


def _worst(run: RunData, limit: int) -> list[dict]:
    """Wrong answers, worst first: regressions (the base model was right), invented names, SQL that did not run,
    then runnable SQL with a wrong result."""
    def rank(p):
        regression = run.base_correct.get((p["question"], p["gold"])) is True
        return (not regression, not p["hallucinated"], not p["error"])

    wrong = [p for p in run.predictions if not p["correct"]]
    return sorted(wrong, key=rank)[:limit]


def _final_table(run: RunData) -> str:
    """Base vs fine-tuned (and any later `sqlft eval` of the run's adapter), with the change base -> fine-tuned."""
    names = [n for n in ("base", "finetuned") if n in run.final] + sorted(set(run.final) - {"base", "finetuned"})
    label_of = {"finetuned": "fine-tuned"}
    delta = "base" in names and "finetuned" in names
    rows = []

    def row(label, get, pct=True, n=None, key=None):
        vals = [get(run.final[name]) for name in names]
        if all(v is None for v in vals):
            return
        cells = [f'<td class="n">{_fmt(v, pct)}</td>' for v in vals]
        if delta:  # base and fine-tuned come first
            a, b = vals[0], vals[1]
            d = "" if a is None or b is None else f"{100 * (b - a):+.1f} pt" if pct else f"{b - a:+.3g}"
            cls = "" if not d or (b - a) == 0 else ("up" if (b - a > 0) != (key in LOWER_IS_BETTER) else "down")
            cells.insert(2, f'<td class="n {cls}">{d}</td>')
        cells = "".join(cells)
        rows.append(f"<tr><td>{_e(label)}{'' if n is None else f' <span class=sub>(n={n})</span>'}</td>{cells}</tr>")

    if any(run.final[n].get("scored_model") for n in names):  # which model, in which form, each column scored
        cells = [f'<td class="sub">{_e(run.final[n].get("scored_model") or "")}</td>' for n in names]
        if delta:
            cells.insert(2, "<td></td>")
        rows.append(f"<tr><td>scored model</td>{''.join(cells)}</tr>")
    for k in COUNTS:
        row(COUNTS[k], lambda m, k=k: m.get(k), pct=False, key=k)
    for k, label in RATES.items():
        row(f"{k} ({label})", lambda m, k=k: m.get(k), key=k)
    for k, label in EXTRA_RATES.items():  # test-suite accuracy and the tolerant EX, beside EX where measured
        tol = next((run.final[n].get("float_tolerance") for n in names if run.final[n].get("float_tolerance")), None)
        row(f"{k} ({label}{f' {tol:g}' if k == 'ex_tol' and tol else ''})", lambda m, k=k: m.get(k), key=k)
    for kind, label in KINDS.items():
        last = run.final[names[-1]] if not delta else run.final["finetuned"]
        row(f"ex: {label}", lambda m, kind=kind: m.get("kinds", {}).get(kind, {}).get("ex"),
            n=last.get("kinds", {}).get(kind, {}).get("n"))
    for k, label in (RETRY_RATES | VOTE_RATES).items():
        row(label, lambda m, k=k: m.get(k), key=k)
    for k, label in (VOTE_MEANS | TIMINGS).items():
        row(label, lambda m, k=k: m.get(k), pct=False, key=k)
    for k, label in TEST_SUITE.items():
        row(f"test suite: {label}", lambda m, k=k: m.get(k), pct=k == "ts_mutants_killed", key=k)
    tiers = sorted({t for n in names for t in run.final[n].get("tiers", {})})
    for t in tiers:
        row(f"ex [{t}]", lambda m, t=t: m.get("tiers", {}).get(t, {}).get("ex"),
            n=run.final[names[-1]].get("tiers", {}).get(t, {}).get("n"))
    order = (names[:2] + ["change"] + names[2:]) if delta else names
    head = "".join(f"<th>{_e(label_of.get(n, n))}</th>" for n in order)
    return f"<table><tr><th>metric</th>{head}</tr>" + "".join(rows) + "</table>"


def _predictions_table(run: RunData, limit: int) -> str:
    worst = _worst(run, limit)
    n_wrong = sum(not p["correct"] for p in run.predictions)
    intro = (f"<p class=sub>{n_wrong} wrong of {len(run.predictions)} answers; "
             f"{'the ' + str(len(worst)) + ' shown are ' if n_wrong > len(worst) else 'all shown, '}"
             "worst first (regressions from the base model, invented table/column names, SQL that failed to run, "
             f"then wrong results). Source: {_e(run.predictions_source)}.</p>")
    if not worst:
        return intro + "<p>No wrong answers.</p>"
    rows = []
    for i, p in enumerate(worst, 1):
        flags = []
        if run.base_correct.get((p["question"], p["gold"])) is True:
            flags.append('<span class="tag down">regression: base was right</span>')
        if p["hallucinated"]:
            names = " ".join(f'<span class="tag err">{_e(h)}</span>' for h in p["hallucinated"])
            flags.append("hallucinated: " + names)
        err = f'<div class="err sql">{_e(p["error"])}</div>' if p["error"] else "<div class=sub>ran; wrong result</div>"
        rows.append(f"<tr><td class=n>{i}</td><td>{_e(p['tier'] or '')}</td><td>{_e(p['question'])}</td>"
                    f"<td class=sql>{_e(p['gold'])}</td><td class=sql>{_e(p['predicted']) or '<i>(empty)</i>'}</td>"
                    f"<td>{err}{'<div>' + ' '.join(flags) + '</div>' if flags else ''}</td></tr>")
    return (intro + "<table><tr><th>#</th><th>tier</th><th>question</th><th>gold SQL</th><th>predicted SQL</th>"
            "<th>error / hallucinated names</th></tr>" + "".join(rows) + "</table>")


def _run_facts(run: RunData) -> list[tuple[str, str]]:
    c, info = run.config, run.run_info
    facts = []
    if info.get("run_id"):
        facts.append(("run id", info["run_id"]))
    if info.get("git_commit"):
        dirty = " (uncommitted changes)" if info.get("git_dirty") else ""
        facts.append(("git commit", info["git_commit"][:12] + dirty))
    if info.get("wandb") or info.get("group"):
        facts.append(("W&B" if info.get("wandb") else "W&B (off)",
                      f"project {info.get('project')}" + (f", group {info['group']}" if info.get("group") else "")))
    m, q, lora, tr, d = (c.get(k, {}) for k in ("model", "quantization", "lora", "train", "data"))
    if m:
        facts.append(("model", m.get("name_or_path")))
    if q:
        facts.append(("quantization", q.get("mode")))
    if lora:
        modules = ", ".join(lora.get("target_modules", []))
        facts.append(("LoRA", f"r={lora.get('r')} alpha={lora.get('alpha')} on {modules}"))
    if tr:
        batch = tr.get("per_device_batch_size"), tr.get("gradient_accumulation_steps")
        facts.append(("optimizer", f"{tr.get('optimizer')} lr={tr.get('learning_rate')} ({tr.get('lr_scheduler')}, "
                                   f"warmup {tr.get('warmup_steps')}), batch {batch[0]} x accumulation {batch[1]}"))
    if d:
        rows = ("shared-schema prefix packing" if d.get("prefix_sharing") else
                "packing" if d.get("packing") else "padded rows")
        facts.append(("data", f"{d.get('source')} (template {d.get('template')}, max_length {d.get('max_length')}, "
                              f"{rows})"))
    attempts = info.get("attempts") or []
    sys_info = {**(attempts[-1] if attempts else {}), **run.static}
    machine = [f"{sys_info['sys/world_size']} process(es)" if "sys/world_size" in sys_info else None,
               f"{sys_info['sys/nodes']} node(s)" if sys_info.get("sys/nodes", 1) > 1 else None,
               f"{sys_info.get('sys/gpu_count')} x {sys_info['sys/gpu_name']}" if "sys/gpu_name" in sys_info else "CPU"
               if sys_info else None,
               f"{sys_info['sys/cpu_count']} CPU cores" if "sys/cpu_count" in sys_info else None,
               f"torch {sys_info['sys/torch']}" if "sys/torch" in sys_info else None]
    if any(machine):
        facts.append(("machine", ", ".join(x for x in machine if x)))
    if run.checkpoints:
        facts.append(("checkpoints", ", ".join(f"step {s}" for s in run.checkpoints)))
    return facts


def render(run: RunData, out: Path, max_predictions: int = 30) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    name = (run.config.get("tracking", {}) or {}).get("run_name") or run.run_dir.resolve().name
    total = (run.config.get("train", {}) or {}).get("max_steps")
    step = run.last_step
    notes = []

    # ---- header and cards
    status = ('<span class="status finished">finished</span>' if run.finished else
              '<span class="status running">in progress or stopped</span>')
    progress = "no step logged yet" if step is None else f"step {step}" + (f" of {total}" if total else "")
    parts = [f"<h1>{_e(name)} {status}</h1>",
             f"<div class=sub>{_e(str(run.run_dir.resolve()))} · {progress} · last record {_ago(run.last_time)} · "
             f"report written {time.strftime('%Y-%m-%d %H:%M:%S')}</div>"]
    final_ft, final_base = run.final.get("finetuned", {}), run.final.get("base", {})
    cards = [
        ("EX fine-tuned", _fmt(final_ft.get("ex"), True) if final_ft else None),
        ("EX base", _fmt(final_base.get("ex"), True) if final_base else None),
        ("EX periodic (last)", _fmt(run.last("eval/ex"), True) if run.series.get("eval/ex") else None),
        ("train loss", _fmt(run.last("train/loss"))),
        ("GRPO reward (last)", _fmt(run.last("grpo/reward_mean")) if run.series.get("grpo/reward_mean") else None),
        ("eval loss", _fmt(run.last("eval/loss"))),
        ("tokens/s", _fmt(run.last("perf/tokens_per_s"))),
        ("MFU", _fmt(run.last("perf/mfu"), True) if run.series.get("perf/mfu") else None),
        ("peak memory MiB", _fmt(max(run.series["perf/peak_memory_mb"].values()))
         if run.series.get("perf/peak_memory_mb") else None),
        ("trainable params", _fmt(run.last("perf/trainable_params"))),
        ("epoch", _fmt(run.last("train/epoch"))),
    ]
    parts.append("<div class=cards>" + "".join(f"<div class=card><div class=k>{_e(k)}</div><div class=v>{_e(v)}</div>"
                                               "</div>" for k, v in cards if v not in (None, "–")) + "</div>")

    # ---- notes
    if not (run.run_dir / "metrics.jsonl").is_file():
        notes.append("No metrics.jsonl yet: the run has not logged its first step (or RUN_DIR is not a run folder).")
    if not run.finished and step is not None:
        notes.append(f"The run has no final adapter yet: it is still training, or it stopped at step {step} "
                     "(a new launch with the same output_dir resumes it). The page shows what has been logged so far.")
    if run.torn_lines:
        notes.append(f"{run.torn_lines} line(s) of metrics.jsonl could not be read (a record being written, or cut "
                     "by a kill) and were skipped.")
    if run.restarts:
        where = "; ".join(f"from step {a} back to {b}" for a, b in run.restarts)
        notes.append(f"Resumed {len(run.restarts)} time(s) ({where}): steps replayed after a resume are logged twice; "
                     "the later record is the one shown.")
    if not run.final and not run.series.get("eval/ex"):
        notes.append("No execution evaluation yet: it runs every eval.every steps (when set) and at the end of "
                     "training (eval.at_end).")
    if not run.series.get("perf/mfu"):
        notes.append("No MFU: it is logged on CUDA GPUs of known peak (or with SQLFT_PEAK_TFLOPS); a CPU has no "
                     "comparable peak FLOP/s figure.")
    if notes:
        parts.append("".join(f"<div class=note>{_e(n)}</div>" for n in notes))

    facts = _run_facts(run)
    if facts:
        parts.append("<h2>Run</h2><table class=kv>" + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>"
                                                             for k, v in facts) + "</table>")

    # ---- plots, grouped
    figures = {stem: (caption, fig) for stem, caption, fig in make_figures(run)}
    sections = [("Execution accuracy", ["final_tiers", "eval_execution", "eval_tiers"]),
                ("Training", ["loss", "learning_rate", "grad_norm", "grpo_rollouts"]),
                ("Throughput and memory", ["throughput", "mfu", "memory", "grpo_time"])]
    for title, stems in sections:
        body, imgs = [], []
        if title == "Execution accuracy" and run.final:
            imgs.append(f"<figure id=final-table>{_final_table(run)}<figcaption>End of training, whole held-out split "
                        "(eval/base_metrics.json, eval/finetuned_metrics.json)</figcaption></figure>")
        for stem in stems:
            if stem in figures:
                caption, fig = figures[stem]
                b64 = _png(fig, out.parent / f"{stem}.png")
                imgs.append(f'<figure id="fig-{stem}"><img alt="{_e(caption)}" src="data:image/png;base64,{b64}">'
                            f"<figcaption>{_e(caption)}</figcaption></figure>")
        if imgs:
            body.append("<div class=grid>" + "".join(imgs) + "</div>")
        if not body:
            body.append("<p class=sub>Nothing logged yet.</p>")
        parts.append(f'<h2 id="{title.split()[0].lower()}">{_e(title)}</h2>' + "".join(body))

    parts.append('<h2 id="predictions">Worst predictions</h2>')
    parts.append(_predictions_table(run, max_predictions) if run.predictions else
                 "<p class=sub>No predictions yet: they are written by the execution evaluation "
                 "(eval.every during training, eval.at_end at the end).</p>")

    page = ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{_e(name)} · sqlft report</title><style>{CSS}</style></head><body>" + "\n".join(parts)
            + "</body></html>")
    out.write_text(page, encoding="utf-8")
    return out


def build_report(run_dir: str | Path, out: str | Path | None = None, max_predictions: int = 30) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run folder '{run_dir}' does not exist")
    out = Path(out) if out else run_dir / "report" / "report.html"
    return render(load_run(run_dir), out, max_predictions)


def _own(p) -> None:
    p.add_argument("run_dir", help="a training output_dir (holds metrics.jsonl)")
    p.add_argument("--out", help="HTML file to write (default RUN_DIR/report/report.html); PNGs go next to it")
    p.add_argument("--max-predictions", type=int, default=30, help="wrong predictions to list (default 30)")


COMMAND = Command(name="report", description=__doc__, add_arguments=_own)


def report_command(cfg, args) -> int:
    path = build_report(args.run_dir, args.out, args.max_predictions)
    print(f"report: {path.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return run(COMMAND, report_command, argv, errors=(FileNotFoundError,))


if __name__ == "__main__":
    sys.exit(main())
