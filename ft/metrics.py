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
# Present only when asked for, beside the official EX: ex_tol with eval.float_tolerance > 0 (the tolerance is
# printed with it), ts with eval.test_suite K > 0 (test-suite accuracy, Spider's official metric).
EXTRA_RATES = {
    "ts": "test-suite accuracy",
    "ex_tol": "EX, numbers within eval.float_tolerance",
}
# Counts beside the rates: questions scored, questions left out because their gold query could not run, answers
# EX counted right that the test suite rejects (with eval.test_suite), questions the adapter was trained on.
COUNTS = {"n": "questions scored", "gold_failed": "gold query failed (not scored)",
          "ts_rejected": "EX right, test suite wrong", "trained_questions": "trained on (reported apart)"}
# Questions by kind, when the training data is known: the users' case (new questions about the databases trained
# on), generalisation (databases never seen), and questions that were training rows (not a measure of either).
KINDS = {"seen_db": "unseen questions, training databases", "unseen_db": "unseen databases",
         "trained": "questions trained on"}
# Figures of the test suite itself (eval.test_suite): neighbours built per database, kept per question on average,
# questions no neighbour judges (TS = EX there), mutants of the gold queries the database alone can't tell apart and
# the share of them the kept neighbours do.
TEST_SUITE = {
    "ts_neighbours": "neighbour databases per database",
    "ts_kept_mean": "neighbours kept per question",
    "ts_questions_without_neighbours": "questions no neighbour judges",
    "ts_mutants_surviving_ex": "gold mutants EX can't tell apart",
    "ts_mutants_killed": "of them, told apart by the test suite",
}
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
