"""Scoring by execution: candidates checked and run, the answer picked, compared with the gold result; summaries.

    p = score_one(row, raw_output, seconds, timeout_s, max_rows)       # one answer: validate, execute both, compare
    preds, summary = evaluate(model, tokenizer, rows, cfg.eval)      # generate + pick + score a dataset
    preds, summary = score_texts(rows, texts, cfg.eval)              # score answers written elsewhere, no model

Every answer ends in exactly one outcome: correct, wrong, invalid (doesn't validate against the schema or doesn't
run), truncated (a result cut at `eval.max_rows` can't be compared: never correct), or gold_failed (the gold query
couldn't run: the question is left out of every rate and counted by database). Anything parsing, validating or
executing model output raises is an invalid answer, never a crash.

Correct means EX under the official rule (ft.sql.compare: Spider's test-suite comparison); `correct_set` is BIRD's;
`correct_tol` (eval.float_tolerance > 0) the same as EX with numbers equal within a relative tolerance; `correct_ts`
(eval.test_suite K > 0) test-suite accuracy: right by EX and on every kept neighbour database (ft.eval.testsuite).

Picking the answer among candidates is one mechanism with two rules (`pick`): with `eval.samples N` (execution-guided
decoding) the greedy answer and N samples are grouped by their results and the largest group of valid candidates
wins; with `eval.retries N` (retry with validation) N samples are drawn only when the greedy answer fails schema
validation, and the first that validates replaces it. An invalid candidate never wins over a valid one.
"""
from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ft.data.prompt import sql_from_output
from ft.data.rows import Row
from ft.sql.compare import order_matters, query_has_order_by, results_match
from ft.sql.engine import DatabaseError, database
from ft.sql.execute import ExecResult
from ft.sql.parse import normalize_sql
from ft.sql.validate import validate

if TYPE_CHECKING:
    from ft.config import EvalConfig
    from ft.eval.generation import Generator
    from ft.eval.testsuite import TestSuite


@dataclass
class Prediction:
    question: str
    gold: str
    predicted: str
    tier: str | None = None
    db_id: str | None = None
    raw_output: str = ""
    outcome: str = "wrong"  # correct | wrong | invalid | truncated | gold_failed
    error: str | None = None  # why the predicted SQL didn't run (or the gold query, for gold_failed)
    correct: bool = False  # Spider-style: multiset, order-aware when the gold query has ORDER BY
    correct_set: bool = False  # BIRD-style: set comparison
    correct_tol: bool | None = None  # EX with numbers equal within eval.float_tolerance (None: not asked for)
    correct_ts: bool | None = None  # test-suite accuracy (None: eval.test_suite off, or no database)
    ts_error: str | None = None  # where the test suite found EX's right answer wrong
    exact_match: bool = False
    valid: bool = False  # parses and executes
    truncated: bool = False  # the predicted or the gold result hit eval.max_rows
    hallucinated: list[str] = field(default_factory=list)  # tables / columns not in the schema
    validation_errors: list[str] = field(default_factory=list)
    db_seen: bool | None = None  # the question's database was among the training data's (None: unknown)
    trained: bool | None = None  # this question and its SQL were among the training rows (None: unknown)
    retried: bool = False  # first answer failed validation and alternatives were sampled
    correct_first: bool = False  # correctness of the first (greedy) answer, before any retry or vote
    candidates: int = 0  # answers considered (greedy + samples), with eval.samples / eval.retries
    valid_candidates: int = 0  # of them, those that validate and execute
    agreement: float | None = None  # share of the valid candidates in the winning group (eval.samples)
    voted: bool = False  # the answer was picked by execution-guided decoding (eval.samples)
    vote_changed: bool = False  # the vote picked another result than the greedy answer's
    latency_s: float = 0.0  # generation share of its batch + executing its candidates


@dataclass
class Candidate:
    """One answer, checked against the schema and run (not yet compared with the gold result)."""

    raw: str
    sql: str
    validation_errors: list[str]
    hallucinated: list[str]
    result: ExecResult | None
    logprob: float = 0.0
    greedy: bool = False

    @property
    def runs(self) -> bool:
        return self.result is not None and self.result.ok

    @property
    def valid(self) -> bool:
        """Validates against the schema and returns a complete result: what may win a vote."""
        return not self.validation_errors and self.runs and not self.result.truncated


def _run(row: Row, sql: str, timeout_s: float, max_rows: int) -> ExecResult | None:
    """`sql` run on the row's database (ft.sql.engine: SQLite, DuckDB or PostgreSQL), None when it has none."""
    if not row.db:
        return None
    try:
        return database(row.db).execute(sql, row.macros, timeout_s=timeout_s, max_rows=max_rows)
    except DatabaseError as e:
        return ExecResult(None, None, str(e), 0.0)


def check_answer(row: Row, raw: str, timeout_s: float, max_rows: int, *, logprob: float = 0.0,
                 greedy: bool = False) -> Candidate:
    """Extract, validate and (when the row has a database) execute one model answer. Never raises."""
    try:
        sql = sql_from_output(raw)
        v = validate(sql, row.schema, row.macros, dialect=row.sql_dialect, db=database(row.db) if row.db else None)
        errors = [i.message + (f" (did you mean {i.suggestion}?)" if i.suggestion else "") for i in v.errors]
        hallucinated = [i.name for i in v.errors if i.kind in ("unknown_table", "unknown_column")]
    except Exception as e:  # noqa: BLE001 - model output is hostile input: it is invalid, not a crash
        sql, errors, hallucinated = raw.strip()[:2000], [f"could not analyse the answer ({type(e).__name__})"], []
    return Candidate(raw, sql, errors, hallucinated, _run(row, sql, timeout_s, max_rows), logprob, greedy)


def gold_result(row: Row, timeout_s: float, max_rows: int, cache: dict | None = None) -> ExecResult | None:
    """The gold query's result (once per question and database), None when the row has no database."""
    if not row.db:
        return None
    key = (row.db, row.query, str(row.macros))
    if cache is None or key not in cache:
        res = _run(row, row.query, timeout_s * 4, max_rows)
        if cache is None:
            return res
        cache[key] = res
    return cache[key]


def question_key(question: str, sql: str) -> tuple[str, str]:
    """A question as training saw it: its text (case and spacing aside) and its SQL (normalised)."""
    return _question_text(question), normalize_sql(sql)


def _question_text(question: str | None) -> str:
    return " ".join((question or "").lower().split())


def trained_keys(train_rows, rows: list[Row]) -> set[tuple[str, str]]:
    """question_key()s of the training rows whose question is also one of `rows` (what `trained=` takes). A RowSet
    (ft/data/encoded.py) is read two fields at a time, a batch at a time: a million training rows are neither made
    into Row objects nor held as lists of strings for this."""
    wanted = {_question_text(r.question) for r in rows}
    pairs = train_rows.values("question", "query") if hasattr(train_rows, "values") \
        else ((t.question, t.query) for t in train_rows)
    return {question_key(q, sql) for q, sql in pairs if _question_text(q) in wanted}


def judge(row: Row, cand: Candidate, gold: ExecResult | None, seconds: float = 0.0,
          train_dbs: set[str] | None = None, *, rel_tol: float = 0.0, suite: TestSuite | None = None,
          trained: set[tuple[str, str]] | None = None) -> Prediction:
    """The Prediction for a chosen candidate: its one outcome against the gold result. `rel_tol` > 0: also
    `correct_tol`; `suite`: also `correct_ts`; `trained`: question_key()s of the training rows."""
    try:
        em = bool(cand.sql) and normalize_sql(cand.sql, row.sql_dialect) == normalize_sql(row.query, row.sql_dialect)
    except Exception:  # noqa: BLE001 - normalize_sql has its own fallback; this is the last line
        em = False
    p = Prediction(question=row.question, gold=row.query, predicted=cand.sql, tier=row.difficulty, db_id=row.db_id,
                   raw_output=cand.raw, exact_match=em, validation_errors=cand.validation_errors,
                   hallucinated=cand.hallucinated, latency_s=seconds,
                   db_seen=None if train_dbs is None or row.db_id is None else row.db_id in train_dbs)
    if trained is not None:
        p.trained = question_key(row.question, row.query) in trained
    got = cand.result
    if gold is None or not gold.ok:
        p.outcome = "gold_failed"
        p.error = ("gold query failed: " + gold.error) if gold is not None else "no database to execute on (no db)"
        return p
    p.latency_s += got.elapsed_s if got is not None else 0.0
    p.valid, p.error = got.ok, got.error
    if suite is not None:
        p.correct_ts = False  # until the comparison below says right by EX and on every neighbour
    if rel_tol > 0:
        p.correct_tol = False
    if not got.ok:
        p.outcome = "invalid"
        return p
    if got.truncated or gold.truncated:
        p.truncated, p.outcome = True, "truncated"
        cap = len(got.rows if got.truncated else gold.rows)
        p.error = f"{'predicted' if got.truncated else 'gold'} result has more than eval.max_rows={cap} rows"
        return p
    # Spider's test-suite rule: rows as a list when the gold query's text has ORDER BY (ft.sql.compare)
    p.correct = results_match(gold.rows, got.rows, mode="multiset", ordered=order_matters(row.query))
    p.correct_set = results_match(gold.rows, got.rows, mode="set")
    if rel_tol > 0:
        p.correct_tol = results_match(gold.rows, got.rows, mode="multiset", ordered=order_matters(row.query),
                                      rel_tol=rel_tol)
    if suite is not None:
        p.correct_ts, p.ts_error = suite.check(row, cand.sql) if p.correct else (False, None)
    p.outcome = "correct" if p.correct else "wrong"
    return p


def score_one(row: Row, raw: str, latency: float, timeout_s: float, max_rows: int,
              train_dbs: set[str] | None = None, **judging) -> Prediction:
    """One answer scored: the greedy answer of evaluate() without candidates (`judging`: judge()'s options)."""
    p = judge(row, check_answer(row, raw, timeout_s, max_rows, greedy=True), gold_result(row, timeout_s, max_rows),
              latency, train_dbs, **judging)
    p.correct_first = p.correct
    return p


# ------------------------------------------------------------------------------------------------
# picking among candidates


def _same_result(a: Candidate, b: Candidate) -> bool:
    """The comparison execution accuracy uses (multiset, columns may permute); rows in order only when both
    queries order them. No gold query is looked at: the vote happens as it would at inference."""
    ordered = query_has_order_by(a.sql) and query_has_order_by(b.sql)
    return results_match(a.result.rows, b.result.rows, mode="multiset", ordered=ordered)


def vote(candidates: list[Candidate]) -> tuple[Candidate, list[Candidate]]:
    """(winner, its group): the largest group of valid candidates with the same result; ties go to the group that
    holds the greedy answer, then to the group with the higher mean token log-probability. The winner is the
    group's greedy answer if it has it, else its most likely member. With no valid candidate: the greedy answer."""
    groups: list[list[Candidate]] = []
    for c in candidates:
        if not c.valid:
            continue
        for g in groups:
            if _same_result(g[0], c):
                g.append(c)
                break
        else:
            groups.append([c])
    greedy = next((c for c in candidates if c.greedy), candidates[0])
    if not groups:
        return greedy, []
    best = max(groups, key=lambda g: (len(g), any(c.greedy for c in g),
                                      statistics.fmean(c.logprob for c in g if not c.greedy)
                                      if any(not c.greedy for c in g) else -math.inf))
    winner = next((c for c in best if c.greedy), None) or max(best, key=lambda c: c.logprob)
    return winner, best


def first_valid(greedy: Candidate, samples: list[Candidate]) -> Candidate:
    """Retry with validation: the greedy answer if it validates, else the first sample that does."""
    if not greedy.validation_errors:
        return greedy
    return next((c for c in samples if not c.validation_errors), greedy)


# ------------------------------------------------------------------------------------------------
# a dataset


def test_suite_for(cfg: EvalConfig, rows: list[Row], dataset: list[Row] | None = None,
                   log: Callable[[str], None] | None = None) -> tuple[TestSuite | None, dict]:
    """(the prepared test suite, its figures for the summary) when cfg.test_suite > 0, else (None, {})."""
    if not cfg.test_suite:
        return None, {}
    from ft.eval.testsuite import TestSuite

    suite = TestSuite(cfg)
    return suite, suite.prepare(rows, dataset=dataset, log=log)


class _Progress:
    """The progress bar: questions done after each batch, and within a long batch the token being generated (at most
    once a second), so it moves while samples of a large batch are drawn."""

    def __init__(self, total: int, label: str | None, max_new_tokens: int):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, desc=label, disable=label is None, dynamic_ncols=True, unit="q")
        self.on = label is not None
        self.max_new_tokens, self.last, self.t0, self.ex = max_new_tokens, 0.0, time.perf_counter(), ""

    def step(self, token: int) -> None:
        now = time.perf_counter()
        if self.on and now - self.last >= 1.0:
            self.last = now
            self.bar.set_postfix_str(f"{self.ex}batch: token {token}/{self.max_new_tokens}", refresh=True)

    def batch(self, n: int, done: dict) -> None:
        self.bar.update(n)
        if self.on:
            ok = [p for p in done.values() if p.outcome != "gold_failed"]
            self.ex = f"ex={100 * sum(p.correct for p in ok) / max(len(ok), 1):.1f}%, "
            self.bar.set_postfix_str(f"{self.ex}q/s={len(done) / (time.perf_counter() - self.t0):.2f}")

    def close(self) -> None:
        self.bar.close()


def evaluate(model, tokenizer, rows: list[Row], cfg: EvalConfig | None = None, *, template: str = "default",
             synced_gpus: bool = False, train_dbs: set[str] | None = None,
             trained: set[tuple[str, str]] | None = None,
             on_batch: Callable[[list[tuple[int, Prediction]]], None] | None = None,
             should_stop: Callable[[], bool] | None = None, interrupt: Callable[[], bool] | None = None,
             progress: str | None = None, prompt_rows: list[Row] | None = None, suite: TestSuite | None = None,
             dataset: list[Row] | None = None) -> tuple[list[Prediction], dict]:
    """Generate, pick and score every row, batch by batch, under `cfg` (an EvalConfig, passed whole; default: its
    defaults). `on_batch` gets each batch's (row index, prediction) pairs as soon as they are scored (to write them as
    they come); `should_stop` is asked after every batch (it may be a collective: every rank asks it once a batch),
    `interrupt` between generation steps (local to this process; not under `synced_gpus`, where ranks must generate
    in step): either ends the evaluation, an interrupted batch's unfinished answers dropped, and what is done comes
    back (`summary["complete"]` False). `progress`: a progress bar with that label. `prompt_rows`: what the model is
    prompted with when it differs from `rows` (a schema linked to fit the context, ft.data.linking.fit_prompt);
    answers are still validated against the row's whole schema. `suite`: a prepared TestSuite (default: one made
    here when cfg.test_suite > 0; `dataset`: the rows `rows` come from, for its neighbours' literals). `trained`:
    question_key()s of the training rows, to report those questions apart."""
    from ft.config import EvalConfig
    from ft.eval.generation import GenerationStopped, Generator  # torch: only where a model generates

    e = cfg if cfg is not None else EvalConfig()
    t0 = time.perf_counter()
    bar = _Progress(len(rows), progress, e.max_new_tokens)
    if suite is None and e.test_suite:
        suite, _ = test_suite_for(e, rows, dataset, log=(lambda m: bar.bar.write(m)) if progress else None)
    ts_figures = suite.stats(rows) if suite is not None else {}
    watch = dict(interrupt=None if synced_gpus else interrupt, on_step=bar.step)
    gen = Generator(model, tokenizer, template, e.max_new_tokens, samples=e.samples, temperature=e.temperature,
                    top_p=e.top_p, synced_gpus=synced_gpus, reuse_schema_cache=e.reuse_schema_cache,
                    constrain=e.constrain, **watch)
    retry_gen = Generator(model, tokenizer, template, e.max_new_tokens, samples=e.retries, temperature=e.temperature,
                          top_p=e.top_p, constrain=e.constrain, **watch) if e.retries else None
    judging = dict(rel_tol=e.float_tolerance, suite=suite, trained=trained)
    golds: dict = {}
    done: dict[int, Prediction] = {}
    stopped = False
    prompts = prompt_rows if prompt_rows is not None else rows
    for chunk in gen.batches(prompts, batch_size=e.batch_size):
        scored = []
        try:
            outs = gen.run([prompts[i] for i in chunk])
            for i, g in zip(chunk, outs):
                scored.append((i, _pick(rows[i], g, prompts[i], e, retry_gen, golds, train_dbs, judging)))
        except GenerationStopped:
            stopped = True  # this batch's answers are unfinished: none of them is kept
            scored = []
        for i, p in scored:
            done[i] = p
        if on_batch is not None:
            on_batch(scored)  # also after an interrupted batch: under several processes it lines up a collective
        bar.batch(len(scored), done)
        if stopped or (should_stop is not None and should_stop()):
            stopped = len(done) < len(rows)
            break
    bar.close()
    preds = [done[i] for i in sorted(done)]
    summary = summarize(preds, time.perf_counter() - t0) | ts_figures
    summary["complete"] = not stopped
    if e.float_tolerance:
        summary["float_tolerance"] = e.float_tolerance
    if e.constrain:  # what the identifier constraint did: next tokens it masked, over all answers
        summary["constrain_masked_tokens"] = gen.masked + (retry_gen.masked if retry_gen else 0)
    return preds, summary


def _pick(row: Row, g, prompt: Row, e: EvalConfig, retry_gen: Generator | None, golds: dict,
          train_dbs: set[str] | None, judging: dict) -> Prediction:
    """One question's prediction from its generated answers: checked, picked (vote or retry), judged."""
    greedy = check_answer(row, g.text, e.timeout_s, e.max_rows, greedy=True)
    cands = [greedy] + [check_answer(row, t, e.timeout_s, e.max_rows, logprob=lp)
                        for t, lp in zip(g.samples, g.sample_logprobs)]
    gold = gold_result(row, e.timeout_s, e.max_rows, golds)
    first = judge(row, greedy, gold, g.seconds, train_dbs, **judging)
    seconds, group = g.seconds, []
    if retry_gen is not None and greedy.validation_errors:
        extra = retry_gen.run([prompt], greedy=False)[0]
        seconds += extra.seconds
        cands += [check_answer(row, t, e.timeout_s, e.max_rows, logprob=lp)
                  for t, lp in zip(extra.samples, extra.sample_logprobs)]
        chosen = first_valid(greedy, cands[1:])
    elif e.samples:
        chosen, group = vote(cands)
    else:
        chosen = greedy
    p = first if chosen is greedy else judge(row, chosen, gold, seconds, train_dbs, **judging)
    p.latency_s = seconds + sum(c.result.elapsed_s for c in cands if c.result is not None)
    p.correct_first = first.correct
    p.retried = retry_gen is not None and bool(greedy.validation_errors)
    if len(cands) > 1:
        valid = [c for c in cands if c.valid]
        p.candidates, p.valid_candidates = len(cands), len(valid)
    if e.samples:
        p.voted, p.vote_changed = True, chosen is not greedy
        p.agreement = len(group) / p.valid_candidates if p.valid_candidates else None
    return p


def score_texts(rows: list[Row], texts: list[str], cfg: EvalConfig | None = None, *,
                train_dbs: set[str] | None = None, trained: set[tuple[str, str]] | None = None,
                on_batch: Callable[[list[tuple[int, Prediction]]], None] | None = None,
                should_stop: Callable[[], bool] | None = None, progress: str | None = None,
                suite: TestSuite | None = None, dataset: list[Row] | None = None,
                batch_size: int = 32) -> tuple[list[Prediction], dict]:
    """Score answers written by anyone (`texts[i]` answers `rows[i]`: SQL, or a model's output holding it) under the
    same rules, executor and outcomes as evaluate(), without a model. Written out `batch_size` at a time."""
    from ft.config import EvalConfig

    e = cfg if cfg is not None else EvalConfig()
    t0 = time.perf_counter()
    bar = _Progress(len(rows), progress, 0)
    if suite is None and e.test_suite:
        suite, _ = test_suite_for(e, rows, dataset, log=(lambda m: bar.bar.write(m)) if progress else None)
    judging = dict(rel_tol=e.float_tolerance, suite=suite, trained=trained)
    golds: dict = {}
    done: dict[int, Prediction] = {}
    stopped = False
    for start in range(0, len(rows), batch_size):
        scored = []
        for i in range(start, min(start + batch_size, len(rows))):
            gold = gold_result(rows[i], e.timeout_s, e.max_rows, golds)
            cand = check_answer(rows[i], texts[i], e.timeout_s, e.max_rows, greedy=True)
            p = judge(rows[i], cand, gold, 0.0, train_dbs, **judging)
            p.correct_first = p.correct
            scored.append((i, p))
            done[i] = p
        if on_batch is not None:
            on_batch(scored)
        bar.batch(len(scored), done)
        if should_stop is not None and should_stop():
            stopped = len(done) < len(rows)
            break
    bar.close()
    preds = [done[i] for i in sorted(done)]
    summary = summarize(preds, time.perf_counter() - t0) | (suite.stats(rows) if suite is not None else {})
    summary["complete"] = not stopped
    if e.float_tolerance:
        summary["float_tolerance"] = e.float_tolerance
    return preds, summary


# ------------------------------------------------------------------------------------------------
# summaries


# What each rate of ft.metrics.RATES counts, per prediction (over the scored ones: gold_failed are left out).
RATE_OF = {
    "ex": lambda p: p.correct,
    "ex_set": lambda p: p.correct_set,
    "em": lambda p: p.exact_match,
    "valid": lambda p: p.valid,
    "hallucination": lambda p: bool(p.hallucinated),
    "truncated": lambda p: p.truncated,
}


# Rates present only when asked for (ft.metrics.EXTRA_RATES): None on a prediction means "not measured".
EXTRA_RATE_OF = {
    "ex_tol": lambda p: p.correct_tol,
    "ts": lambda p: p.correct_ts,
}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q * len(s)) - 1))]


def _rates(preds: list[Prediction]) -> dict:
    """Rates over the scored predictions, with the picking figures where candidates were picked among."""
    scored = [p for p in preds if p.outcome != "gold_failed"]
    n = len(scored)
    out: dict = {"n": n, "gold_failed": len(preds) - n}
    if n == 0:
        return out
    out |= {k: sum(bool(f(p)) for p in scored) / n for k, f in RATE_OF.items()}
    for k, f in EXTRA_RATE_OF.items():
        if any(f(p) is not None for p in scored):
            out[k] = sum(bool(f(p)) for p in scored) / n
    if "ts" in out:  # answers EX counted right that the test suite rejects
        out["ts_rejected"] = sum(p.correct and not p.correct_ts for p in scored)
    retried = [p for p in scored if p.retried]
    if retried:
        out |= {"retry_rate": len(retried) / n,
                "retry_found_valid": sum(not p.validation_errors for p in retried) / len(retried),
                "ex_without_retry": sum(p.correct_first for p in scored) / n}
    if any(p.voted for p in scored):
        agreeing = [p.agreement for p in scored if p.agreement is not None]
        out |= {"ex_greedy": sum(p.correct_first for p in scored) / n,
                "vote_changed": sum(p.vote_changed for p in scored) / n,
                "vote_helped": sum(p.vote_changed and p.correct and not p.correct_first for p in scored) / n,
                "vote_hurt": sum(p.vote_changed and not p.correct and p.correct_first for p in scored) / n,
                "valid_candidates": statistics.fmean(p.valid_candidates for p in scored),
                "agreement": statistics.fmean(agreeing) if agreeing else 0.0}
    return out


def summarize(preds: list[Prediction], wall_s: float | None = None) -> dict:
    """Rates overall, per tier and per kind (training databases or not, when known; questions trained on apart);
    gold failures by database; time per question p50 / p95 and questions per second."""
    out = _rates(preds)
    lat = [p.latency_s for p in preds]
    out["time_per_question_p50_s"] = statistics.median(lat) if lat else 0.0
    out["time_per_question_p95_s"] = _pct(lat, 0.95)
    if wall_s:
        out["questions_per_s"] = len(preds) / wall_s
    failed = Counter(p.db_id or "?" for p in preds if p.outcome == "gold_failed")
    if failed:
        out["gold_failed_by_db"] = dict(sorted(failed.items()))
    out["tiers"] = {t: _rates([p for p in preds if p.tier == t]) for t in sorted({p.tier for p in preds if p.tier})}
    if any(p.db_seen is not None or p.trained for p in preds):
        # a question trained on is reported apart, never as an unseen question
        fresh = [p for p in preds if not p.trained]
        kinds = {"seen_db": [p for p in fresh if p.db_seen], "unseen_db": [p for p in fresh if p.db_seen is False],
                 "trained": [p for p in preds if p.trained]}
        out["kinds"] = {k: _rates(v) for k, v in kinds.items() if v}
    if any(p.trained is not None for p in preds):
        out["trained_questions"] = sum(bool(p.trained) for p in preds)
    return out
