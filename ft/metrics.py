"""The one list of evaluation metric names and difficulty tiers.

The trainer (eval/*, final/*), the console table (ft.eval.output), the HTML report (ft.report) and the W&B dashboard
(ft.dashboard) all read these, so a metric added here appears everywhere; docs/metrics.md describes each
(tests/test_dashboard.py checks the two agree). Imports nothing.
"""
from __future__ import annotations

# Shares of the scored questions (those whose gold query ran), overall, per tier and per kind: key -> label.
RATES = {
    "ex": "execution accuracy",
    "ex_set": "EX (set)",
    "em": "exact match",
    "valid": "valid SQL",
    "hallucination": "hallucination",
    "truncated": "result cut at eval.max_rows",  # not comparable: never counted correct
}
# Counts beside the rates: questions scored, and questions left out because their gold query could not run.
COUNTS = {"n": "questions scored", "gold_failed": "gold query failed (not scored)"}
# Held-out questions by kind, when the training databases are known: the users' case (new questions about the
# databases trained on) and generalisation (databases never seen).
KINDS = {"seen_db": "unseen questions, training databases", "unseen_db": "unseen databases"}
# Present only when retry-with-validation ran (eval.retries > 0 and some answer failed validation).
RETRY_RATES = {
    "ex_without_retry": "EX without retry",
    "retry_rate": "retried",
    "retry_found_valid": "retry found valid",
}
# Present only with execution-guided decoding (eval.samples > 0).
VOTE_RATES = {
    "ex_greedy": "EX of the greedy answer",
    "vote_changed": "vote changed the answer",
    "vote_helped": "changed: wrong -> right",
    "vote_hurt": "changed: right -> wrong",
}
VOTE_MEANS = {
    "valid_candidates": "valid candidates per question",
    "agreement": "share of valid candidates in the winning group",
}
# Speed of an evaluation (not shares). Time per question: its batch's generation time divided by the questions in
# the batch, plus executing its candidates (a batch's answers are all ready when the batch is).
TIMINGS = {
    "time_per_question_p50_s": "time per question p50 (s)",
    "time_per_question_p95_s": "time per question p95 (s)",
    "questions_per_s": "questions/s",
}
LOWER_IS_BETTER = frozenset({"hallucination", "truncated", "time_per_question_p50_s", "time_per_question_p95_s",
                             "vote_hurt"})

# Difficulty tiers of the bundled dataset (ft/data/synthetic); other datasets bring their own (Spider: easy ... extra).
TIERS = ("simple", "aggregate", "topk", "join", "nested", "date", "percent", "macro")

# W&B tables of predictions: the periodic sample, and the whole held-out split at the end (fine-tuned model).
TABLES = ("eval/predictions", "final/predictions")
# Logged only on CUDA (a CPU run can't show them).
CUDA_ONLY = frozenset({"perf/mfu", "sys/gpu_reserved_mb"})
