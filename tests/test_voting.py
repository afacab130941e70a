"""Execution-guided decoding: the vote over executed candidates (on candidates we control), retry with validation
through the same path, and sampling N candidates from one prompt pass against transformers' N separate prefills."""
import pytest
import torch
from conftest import build_shop_db, make_rows

from ft.config import EvalConfig
from ft.data.prompt import encode_prompt
from ft.data.rows import Row
from ft.eval import generation
from ft.eval.generation import Generated, Generator, generate_batch
from ft.eval.scoring import check_answer, evaluate, vote


@pytest.fixture
def shop(tmp_path):
    db = build_shop_db(tmp_path / "shop.sqlite")
    return [Row(**r, db_id="shop", db_path=str(db)) for r in make_rows(6)]


def cand(row, sql, logprob=0.0, greedy=False):
    return check_answer(row, sql + "\n```", 5, 1000, logprob=logprob, greedy=greedy)


COUNT_PARIS = "SELECT COUNT(*) FROM customers WHERE city = 'Paris'"
COUNT_PARIS_2 = "SELECT count(id) FROM customers WHERE city = 'Paris'"  # same result, other SQL
COUNT_ALL = "SELECT COUNT(*) FROM customers"
BAD_COLUMN = "SELECT COUNT(*) FROM customers WHERE town = 'Paris'"  # fails schema validation


def test_the_largest_group_of_valid_candidates_wins(shop):
    row = shop[0]
    greedy = cand(row, COUNT_ALL, greedy=True)
    winner, group = vote([greedy, cand(row, COUNT_PARIS, -1.0), cand(row, COUNT_PARIS_2, -2.0), cand(row, COUNT_ALL)])
    assert len(group) == 2 and winner.greedy  # 2 vs 2: the greedy answer's group wins the tie
    winner, group = vote([greedy, cand(row, COUNT_PARIS, -1.0), cand(row, COUNT_PARIS_2, -2.0)])
    assert winner.sql == COUNT_PARIS and len(group) == 2  # the group's most likely member
    # a tie without the greedy answer: the higher mean token log-probability
    a, b = cand(row, COUNT_PARIS, -0.5), cand(row, COUNT_ALL, -3.0)
    assert vote([cand(row, BAD_COLUMN, greedy=True), b, a])[0] is a
    assert vote([cand(row, BAD_COLUMN, greedy=True), cand(row, COUNT_PARIS, -9.0), cand(row, COUNT_ALL, -0.1)])[0].sql \
        == COUNT_ALL


def test_an_invalid_candidate_never_wins(shop):
    row = shop[0]
    bad = [cand(row, BAD_COLUMN, -0.1) for _ in range(5)]  # the largest "group", but it doesn't validate
    bad += [cand(row, "SELECT nonsense FROM", -0.1), cand(row, "DROP TABLE customers", -0.1)]
    one_valid = cand(row, COUNT_ALL, -5.0)
    winner, group = vote([cand(row, BAD_COLUMN, greedy=True), *bad, one_valid])
    assert winner is one_valid and group == [one_valid]
    # nothing valid at all: the greedy answer stands
    greedy = cand(row, BAD_COLUMN, greedy=True)
    assert vote([greedy, *bad]) == (greedy, [])
    # a result cut at the row cap can't be compared: it never wins either
    capped = check_answer(row, "SELECT * FROM orders\n```", 5, 10)
    assert capped.result.truncated and not capped.valid


class StubGenerator:
    """A generator whose answers we choose: ANSWERS[question] = (greedy, [samples])."""

    ANSWERS: dict = {}

    def __init__(self, model, tokenizer, template, max_new_tokens, *, samples=0, **kw):
        self.samples = samples

    def batches(self, rows, batch_size):
        return [list(range(s, min(s + batch_size, len(rows)))) for s in range(0, len(rows), batch_size)]

    def run(self, rows, greedy=True):
        out = []
        for r in rows:
            g, samples = self.ANSWERS[r.question]
            samples = samples[: self.samples]
            out.append(Generated(g + "\n```" if greedy else "", 0.01, [s + "\n```" for s in samples],
                                 [-1.0 - i for i in range(len(samples))]))
        return out


@pytest.fixture
def stub(monkeypatch):
    monkeypatch.setattr(generation, "Generator", StubGenerator)  # evaluate() imports it from there when it runs
    return StubGenerator


class NoModel:
    training = False

    def eval(self):
        return self

    def train(self, mode=True):
        return self


def test_vote_through_evaluate_reports_what_it_did(shop, stub):
    q = [r.question for r in shop[:3]]
    gold = [r.query for r in shop[:3]]
    stub.ANSWERS = {
        q[0]: (BAD_COLUMN, [gold[0], gold[0], COUNT_ALL]),  # wrong greedy, the majority right: helped
        q[1]: (gold[1], ["SELECT 1", "SELECT 1", "SELECT 1"]),  # right greedy, a wrong majority: hurt
        q[2]: (gold[2], [gold[2], "SELECT 2", BAD_COLUMN]),  # right greedy kept
    }
    preds, m = evaluate(NoModel(), None, shop[:3], EvalConfig(samples=3, batch_size=2))
    assert [p.correct for p in preds] == [True, False, True]
    assert [p.correct_first for p in preds] == [False, True, True] and [p.vote_changed for p in preds] == [
        True, True, False]
    assert m["ex"] == pytest.approx(2 / 3) and m["ex_greedy"] == pytest.approx(2 / 3)
    assert m["vote_changed"] == pytest.approx(2 / 3) and m["vote_helped"] == m["vote_hurt"] == pytest.approx(1 / 3)
    assert preds[0].candidates == 4 and preds[0].valid_candidates == 3 and preds[0].agreement == pytest.approx(2 / 3)
    assert m["valid_candidates"] == pytest.approx((3 + 4 + 3) / 3)
    # with no samples the answer is the greedy one, and no vote figures are reported
    preds0, m0 = evaluate(NoModel(), None, shop[:3], EvalConfig(samples=0, batch_size=2))
    assert [p.correct for p in preds0] == [False, True, True] and "vote_changed" not in m0


def test_retry_with_validation_goes_through_the_same_path(shop, stub):
    q = [r.question for r in shop[:3]]
    gold = [r.query for r in shop[:3]]
    stub.ANSWERS = {
        q[0]: (BAD_COLUMN, [BAD_COLUMN, gold[0]]),  # fails validation; the second sample validates and is right
        q[1]: (BAD_COLUMN, [BAD_COLUMN, BAD_COLUMN]),  # nothing validates: the greedy answer stays
        q[2]: (gold[2], ["SELECT 1", "SELECT 1"]),  # valid greedy: no retry, the samples never drawn
    }
    preds, m = evaluate(NoModel(), None, shop[:3], EvalConfig(retries=2, batch_size=3))
    assert [p.retried for p in preds] == [True, True, False] and [p.correct for p in preds] == [True, False, True]
    assert preds[0].predicted == gold[0] and preds[1].predicted == BAD_COLUMN and preds[2].candidates == 0
    assert m["retry_rate"] == pytest.approx(2 / 3) and m["retry_found_valid"] == pytest.approx(1 / 2)
    assert m["ex_without_retry"] == pytest.approx(1 / 3) and m["ex"] == pytest.approx(2 / 3)


def test_samples_from_one_prompt_pass_equal_separate_prefills(tiny_model):
    from transformers import AutoModelForCausalLM

    from ft.model import load_tokenizer

    tok = load_tokenizer(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32).eval()
    rows = [Row(**r) for r in make_rows(5)]
    prompts = [encode_prompt(r, tok, "default") for r in rows]
    gen = Generator(model, tok, "default", 10, samples=4)
    # One prefill, its cache copied 4 times along the batch, against transformers repeating every prompt 4 times
    # before its prefill: the same logits row by row, and the same random draws in the same order (one multinomial
    # over all rows a step), so the same tokens for the same seed. Bitwise here (fp32 on one CPU); on other
    # hardware a near-tie could differ in the last bit, which is why this compares tokens, not logits.
    torch.manual_seed(7)
    ours = [s for g in gen.run(rows) for s in g.samples]
    torch.manual_seed(7)
    theirs = generate_batch(model, tok, prompts, 10, sample=True, num_return_sequences=4)
    assert ours == theirs
    torch.manual_seed(8)  # negative control: another seed draws other samples
    assert [s for g in gen.run(rows) for s in g.samples] != theirs
    # the greedy answers are those of plain greedy generation, and every sample has its mean log-probability
    torch.manual_seed(7)
    outs = gen.run(rows)
    assert [g.text for g in outs] == generate_batch(model, tok, prompts, 10)
    assert all(len(g.samples) == len(g.sample_logprobs) == 4 and all(lp < 0 for lp in g.sample_logprobs)
               for g in outs)
