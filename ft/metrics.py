"""The one list of evaluation metric names and difficulty tiers.

The trainer (eval/*, final/*), the console table (ft.eval.output), the HTML report (ft.report) and the W&B dashboard
(ft.dashboard) all read these, so a metric added here appears everywhere; docs/metrics.md describes each
(tests/test_dashboard.py checks the two agree). Imports nothing.
"""
from __future__ import annotations

# Shares of the evaluated questions, overall and per tier: key -> label.
RATES = {
    "ex": "execution accuracy",
    "ex_set": "EX (set)",
    "em": "exact match",
    "valid": "valid SQL",
    "hallucination": "hallucination",
}
# Present only when retry-with-validation ran (eval.retries > 0 and some answer failed validation).
RETRY_RATES = {
    "ex_without_retry": "EX without retry",
    "retry_rate": "retried",
    "retry_found_valid": "retry found valid",
}
# Speed of an evaluation (not shares).
TIMINGS = {
    "latency_p50_s": "latency p50 (s)",
    "latency_p95_s": "latency p95 (s)",
    "questions_per_s": "questions/s",
}
LOWER_IS_BETTER = frozenset({"hallucination", "latency_p50_s", "latency_p95_s"})

# Difficulty tiers of the bundled dataset (ft/data/synthetic); other datasets bring their own (Spider: easy ... extra).
TIERS = ("simple", "aggregate", "topk", "join", "nested", "date", "percent", "macro")

# W&B tables of predictions: the periodic sample, and the whole held-out split at the end (fine-tuned model).
TABLES = ("eval/predictions", "final/predictions")
# Logged only on CUDA (a CPU run can't show them).
CUDA_ONLY = frozenset({"perf/mfu", "sys/gpu_reserved_mb"})
