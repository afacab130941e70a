import pytest
from conftest import SCHEMA

from ft.data.prompt import build_prompt, encode_example, encode_rows
from ft.data.rows import Row


def row(**kw):
    base = dict(question="How many customers live in Paris?",
                query="SELECT COUNT(*) FROM customers WHERE city = 'Paris';", schema=SCHEMA)
    return Row(**(base | kw))


def test_default_prompt_is_the_seed_format():
    p = build_prompt(row())
    assert p.startswith("### Task\nGenerate a SQL query to answer the following question: "
                        "`How many customers live in Paris?`")
    assert "### Database Schema\nCREATE TABLE customers" in p
    assert p.endswith("### Answer\n```sql\n")
    s = build_prompt(row(), "schema_first")
    assert s.startswith("### Database Schema") and s.index("### Task") > s.index("CREATE TABLE")


def test_macros_and_evidence_are_shown():
    r = row(evidence="Paris is a city", macros=[{"name": "fq", "params": ["d"], "body": ":d", "doc": "fiscal quarter"}])
    p = build_prompt(r)
    assert "Hint: Paris is a city" in p and "-- macro fq(d): fiscal quarter" in p


def test_labels_mask_prompt_and_learn_eos(tok):
    enc = encode_example(row(), tok, "default", 1024, "error")
    n_prompt = len(tok(build_prompt(row()))["input_ids"])
    assert enc.labels[:n_prompt] == [-100] * n_prompt
    assert enc.labels[n_prompt:] == enc.input_ids[n_prompt:]
    assert enc.input_ids[-1] == tok.eos_token_id and enc.labels[-1] == tok.eos_token_id
    assert tok.pad_token_id is not None
    answer = tok.decode(enc.input_ids[n_prompt:-1])
    assert answer == "SELECT COUNT(*) FROM customers WHERE city = 'Paris'\n```"


def test_chat_template(tok):
    p = build_prompt(row(), "chat", tok)
    assert "<|user|>" in p and p.endswith("<|assistant|>\n```sql\n")


def test_overlong_policies(tok):
    r = row()
    full = len(encode_example(r, tok, "default", 4096, "error").input_ids)
    with pytest.raises(Exception, match="max_length"):
        encode_example(r, tok, "default", full - 1, "error")
    assert encode_example(r, tok, "default", full - 1, "skip") is None
    enc = encode_example(r, tok, "default", full - 1, "truncate_schema")
    assert enc.outcome == "truncated_schema" and len(enc.input_ids) < full
    text = tok.decode(enc.input_ids)
    assert "CREATE TABLE customers" in text and "CREATE TABLE orders" not in text
    assert text.rstrip().endswith("```</s>") or tok.eos_token in text
    exs, counts = encode_rows([r, r], tok, "default", full - 1, "truncate_schema")
    assert counts == {"kept": 0, "truncated_schema": 2, "skipped_overlong": 0}
    # the answer is never cut: a limit below the answer's length skips the row
    assert encode_example(r, tok, "default", 20, "truncate_schema") is None
