"""One model in memory answering questions from many clients: a small queue, batched generation, then the same
checking, execution and picking as `sqlft eval` and `sqlft generate` (ft.eval.scoring: check_answer, vote,
first_valid).

    answerer = Answerer(model, tokenizer, cfg, window_s=0.02, max_batch=8)
    job = answerer.submit(row, prompt_row, samples=0)     # a concurrent.futures.Future of the answer (a dict)
    job.abandon()                                         # the client went away or timed out

One worker thread owns the model. It takes the first waiting question, waits up to `window_s` for others (up to
`max_batch`), and generates for those with the same settings (samples, base or fine-tuned) in one batch
(ft.eval.generation.Generator: one prefill, greedy and samples from it). A question abandoned while it waits is
dropped before any work; one abandoned during its batch's generation is neither executed nor retried. `window_s` 0
with `max_batch` 1 answers one question at a time (what bench/serve.py compares against).
"""
from __future__ import annotations

import contextlib
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

from ft.data.rows import Row
from ft.eval.generation import Generator
from ft.eval.scoring import Candidate, check_answer, first_valid, vote


@dataclass
class Job:
    row: Row  # what the answer is checked and executed against: the whole schema, the database
    prompt: Row  # what the model reads (the schema linked to fit its context)
    samples: int
    base: bool  # the base model's answer (adapter off)
    future: Future = field(default_factory=Future)
    queued_at: float = field(default_factory=time.perf_counter)
    abandoned: threading.Event = field(default_factory=threading.Event)

    def abandon(self) -> None:
        """The client is gone: drop the question if it still waits, skip its execution if it is being generated."""
        self.abandoned.set()
        self.future.cancel()


def _result(c: Candidate, max_rows_shown: int) -> dict:
    res = c.result
    out = {"sql": c.sql, "valid": not c.validation_errors, "validation_errors": c.validation_errors,
           "hallucinated": c.hallucinated, "columns": None, "rows": None, "row_count": None, "truncated": False,
           "execution_error": None}
    if res is not None:
        out["execution_error"] = res.error
        if res.ok:
            out |= {"columns": res.columns, "rows": [list(r) for r in res.rows[:max_rows_shown]],
                    "row_count": len(res.rows), "truncated": res.truncated or len(res.rows) > max_rows_shown}
    return out


class Answerer:
    """The model, its tokenizer and the eval settings (cfg.eval: max_new_tokens, retries, temperature, top_p,
    constrain, timeout_s, max_rows), behind a queue served by one thread."""

    def __init__(self, model, tokenizer, cfg, *, window_s: float = 0.02, max_batch: int = 8,
                 max_rows_shown: int = 200):
        self.model, self.tok, self.cfg = model, tokenizer, cfg
        self.window_s, self.max_batch, self.max_rows_shown = window_s, max(1, max_batch), max_rows_shown
        self.has_base = hasattr(model, "disable_adapter")  # a PeftModel: the base answer is the adapter off
        self.queue: queue.Queue[Job | None] = queue.Queue()
        self.stats = {"batches": 0, "answered": 0, "dropped_waiting": 0, "abandoned_in_batch": 0,
                      "largest_batch": 0}
        self._gens: dict[tuple[int, bool], Generator] = {}
        self._thread = threading.Thread(target=self._work, name="sqlft-answerer", daemon=True)
        self._thread.start()

    def submit(self, row: Row, prompt: Row, samples: int = 0, base: bool = False) -> Job:
        job = Job(row, prompt, samples, base)
        self.queue.put(job)
        return job

    def close(self) -> None:
        self.queue.put(None)
        self._thread.join(timeout=30)

    # ---- the worker --------------------------------------------------------------------------

    def _take(self) -> list[Job] | None:
        first = self.queue.get()
        if first is None:
            return None
        jobs, deadline = [first], time.perf_counter() + self.window_s
        while len(jobs) < self.max_batch:
            left = deadline - time.perf_counter()
            try:
                job = self.queue.get(timeout=left) if left > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self.queue.put(None)
                break
            jobs.append(job)
        return jobs

    def _work(self) -> None:
        while (jobs := self._take()) is not None:
            live = []
            for j in jobs:  # a question abandoned while it waited costs nothing
                if j.future.set_running_or_notify_cancel():
                    live.append(j)
                else:
                    self.stats["dropped_waiting"] += 1
            groups: dict[tuple[int, bool], list[Job]] = {}
            for j in live:
                groups.setdefault((j.samples, j.base), []).append(j)
            for key, group in groups.items():
                try:
                    self._answer(group, *key)
                except Exception as e:  # noqa: BLE001 - one bad batch must not stop the server
                    for j in group:
                        if not j.future.done():
                            j.future.set_exception(e)

    def _generator(self, samples: int, retries: bool = False) -> Generator:
        e = self.cfg.eval
        key = (samples, retries)
        if key not in self._gens:
            self._gens[key] = Generator(self.model, self.tok, self.cfg.data.template, e.max_new_tokens,
                                        samples=samples, temperature=e.temperature, top_p=e.top_p,
                                        constrain=e.constrain)
        return self._gens[key]

    def _answer(self, jobs: list[Job], samples: int, base: bool) -> None:
        e = self.cfg.eval
        started = time.perf_counter()
        self.stats["batches"] += 1
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(jobs))
        off = self.model.disable_adapter() if base and self.has_base else contextlib.nullcontext()
        with off:
            outs = self._generator(samples).run([j.prompt for j in jobs])
            generated = time.perf_counter()
            # ---- checking and picking, as `sqlft eval` does (ft.eval.scoring) ----
            picked: list[tuple[Candidate, list[Candidate], list[Candidate], bool]] = []
            retry = []
            for j, out in zip(jobs, outs):
                if j.abandoned.is_set():
                    picked.append(None)  # type: ignore[arg-type]
                    continue
                greedy = check_answer(j.row, out.text, e.timeout_s, e.max_rows, greedy=True)
                cands = [greedy] + [check_answer(j.row, t, e.timeout_s, e.max_rows, logprob=lp)
                                    for t, lp in zip(out.samples, out.sample_logprobs)]
                if samples:
                    chosen, group = vote(cands)
                    picked.append((chosen, cands, group, True))
                else:
                    picked.append((greedy, cands, [], False))
                    if e.retries and greedy.validation_errors:
                        retry.append(len(picked) - 1)
            if retry:  # retry with validation, batched over the questions that need it
                extra = self._generator(e.retries, retries=True).run([jobs[i].prompt for i in retry], greedy=False)
                for i, out in zip(retry, extra):
                    greedy, cands, _, _ = picked[i]
                    more = [check_answer(jobs[i].row, t, e.timeout_s, e.max_rows, logprob=lp)
                            for t, lp in zip(out.samples, out.sample_logprobs)]
                    picked[i] = (first_valid(greedy, more), cands + more, [], True)
        done = time.perf_counter()
        for j, out, p in zip(jobs, outs, picked):
            if p is None or j.abandoned.is_set():
                self.stats["abandoned_in_batch"] += 1
                continue
            chosen, cands, group, resampled = p
            answer = _result(chosen, self.max_rows_shown) | {
                "resampled": resampled, "hit_token_limit": not out.stopped, "raw_output": chosen.raw,
                "batch_size": len(jobs),
                "timings": {"queue_s": round(started - j.queued_at, 4), "generate_s": round(generated - started, 4),
                            "check_and_execute_s": round(done - generated, 4),
                            "total_s": round(done - j.queued_at, 4)}}
            if len(cands) > 1:
                answer["candidates"] = [{"sql": c.sql, "valid": c.valid, "greedy": c.greedy,
                                         "in_winning_group": any(c is g for g in group), "chosen": c is chosen}
                                        for c in cands]
                answer["winning_votes"] = len(group) if samples else None
            self.stats["answered"] += 1
            j.future.set_result(answer)
