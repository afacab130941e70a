"""`sqlft serve`: a real uvicorn server on a loopback port, its JSON API, batching, abandoned requests, bad input,
and the playground page driven by a real headless Chromium (Debian's, through playwright; skipped without it).

The tiny random Llama is first taught two questions (a few dozen full fine-tuning steps on CPU), so its SQL is right
and executes: the page must show that SQL and its real rows from the SQLite file."""
import argparse
import json
import shutil
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import SCHEMA, build_shop_db
from test_export import make_run

from ft.data.prompt import build_answer, prompt_ids
from ft.data.rows import Row

PARIS = Row(question="How many customers live in Paris?", query="SELECT COUNT(*) FROM customers WHERE city = 'Paris'",
            schema=SCHEMA)
TOP3 = Row(question="List the names of the 3 most expensive products.",
           query="SELECT name FROM products ORDER BY price DESC LIMIT 3", schema=SCHEMA)
CHROMIUM = Path("/usr/bin/chromium")


def teach(base: Path, out: Path, rows: list[Row], steps: int = 80) -> Path:
    """The tiny model fine-tuned (all weights) until it answers `rows` with their SQL (greedy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    seqs = []
    for r in rows:
        p = prompt_ids(r, tok, "default")[0]
        a = tok(build_answer(r), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        seqs.append((p + a, [-100] * len(p) + a))
    width = max(len(s) for s, _ in seqs)
    ids = torch.tensor([s + [tok.pad_token_id] * (width - len(s)) for s, _ in seqs])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s, _ in seqs])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a 2-layer model: more threads only contend (minutes instead of seconds on a busy host)
    try:
        for _ in range(steps):
            model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model):
    root = tmp_path_factory.mktemp("serve")
    base = teach(tiny_model, root / "taught", [PARIS, TOP3])
    db = build_shop_db(root / "shop.sqlite")
    rows = root / "rows.jsonl"
    rows.write_text("".join(json.dumps({"question": r.question, "query": r.query, "schema": r.schema, "db_id": "shop",
                                        "db_path": "shop.sqlite"}) + "\n" for r in (PARIS, TOP3) * 4))
    run = make_run(root / "run", base, rows, evaluate=False, lora_std=0.0)
    return {"root": root, "run": run, "db": db}


def args_for(source: Path, db: Path, **kw) -> argparse.Namespace:
    ns = dict(source=str(source), db=[str(db)], schema=None, macros=None, host="127.0.0.1", port=0, window_ms=20.0,
              max_batch=8, timeout=600.0, overrides={}, config=None)
    return argparse.Namespace(**(ns | kw))


class Server:
    """`sqlft serve`'s app and answerer (ft.serve.__main__.build) under uvicorn on a free loopback port."""

    def __init__(self, source: Path, db: Path, **kw):
        import uvicorn

        from ft.serve.__main__ import bind, build, config_for

        args = args_for(source, db, **kw)
        cfg = config_for(args, {"eval.max_new_tokens": 40})
        self.sock = bind("127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        app, self.answerer = build(cfg, args)
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                break
            time.sleep(0.05)

    def post(self, path: str, body: dict, timeout: float = 120) -> tuple[int, dict]:
        req = urllib.request.Request(self.url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(self.url + path, timeout=30) as r:
            return json.loads(r.read())

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.answerer.close()


@pytest.fixture(scope="module")
def server(world):
    s = Server(world["run"], world["db"], window_ms=300.0)
    yield s
    s.stop()


def paris_count(db: Path) -> int:
    import sqlite3

    return sqlite3.connect(db).execute("SELECT COUNT(*) FROM customers WHERE city = 'Paris'").fetchone()[0]


def test_sql_api_answers_validates_and_executes(server, world):
    status, a = server.post("/v1/sql", {"question": PARIS.question})
    assert status == 200, a
    assert a["sql"] == PARIS.query and a["valid"] and a["validation_errors"] == []
    assert a["columns"] == ["COUNT(*)"] and a["rows"] == [[paris_count(world["db"])]] and a["row_count"] == 1
    assert not a["resampled"] and not a["hit_token_limit"] and a["execution_error"] is None
    assert set(a["linked_tables"]) <= {"customers", "orders", "products"} and "customers" in a["linked_tables"]
    assert a["timings"]["total_s"] >= a["timings"]["generate_s"] > 0
    schema = server.get("/v1/schema")
    assert [t["name"] for t in schema["tables"]] == ["customers", "orders", "products"]
    assert schema["tables"][0]["columns"] == ["id", "name", "city"]
    assert server.get("/v1/health")["base_available"] is True

    status, a = server.post("/v1/sql", {"question": TOP3.question, "samples": 3, "base": True})
    assert status == 200 and a["sql"] == TOP3.query and a["resampled"]
    assert len(a["candidates"]) == 4 and sum(c["chosen"] for c in a["candidates"]) == 1
    assert a["winning_votes"] >= 1 and a["rows"] == [["p20"], ["p19"], ["p18"]]
    assert a["base"]["sql"] == TOP3.query  # the adapter here is peft's identity start: the base answers the same

    status, chat = server.post("/v1/chat/completions", {"messages": [
        {"role": "system", "content": SCHEMA}, {"role": "user", "content": PARIS.question}]})
    assert status == 200 and chat["choices"][0]["message"]["content"] == PARIS.query
    assert chat["choices"][0]["finish_reason"] == "stop" and chat["sqlft"]["valid"]


def test_requests_share_a_batch_and_bad_requests_get_one_line(server):
    before = server.answerer.stats["largest_batch"]
    results = [None] * 4
    def ask(i):
        results[i] = server.post("/v1/sql", {"question": (PARIS, TOP3)[i % 2].question})

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in results)
    assert [a["sql"] for _, a in results] == [PARIS.query, TOP3.query] * 2  # batched, each its own answer
    assert max(a["batch_size"] for _, a in results) > 1 and server.answerer.stats["largest_batch"] >= max(before, 2)

    status, err = server.post("/v1/sql", {"question": "how many " * 400})
    assert status == 422 and "context" in err["error"]
    status, err = server.post("/v1/sql", {"question": "x" * 5000})
    assert status == 422 and err["error"].startswith("question: ")
    status, err = server.post("/v1/sql", {"question": PARIS.question, "db": "elsewhere"})
    assert status == 404 and "unknown database 'elsewhere'" in err["error"]


def test_an_abandoned_question_costs_nothing(server, world):
    a = server.answerer
    row = Row(question=PARIS.question, query="", schema=SCHEMA, db_path=str(world["db"]))
    before = dict(a.stats)
    kept = a.submit(row, row, 0)
    gone = a.submit(row, row, 0)
    gone.abandon()  # within the 300 ms window: the worker is still collecting the batch
    assert kept.future.result(timeout=120)["sql"] == PARIS.query
    assert a.stats["dropped_waiting"] == before["dropped_waiting"] + 1
    assert a.stats["answered"] == before["answered"] + 1 and gone.future.cancelled()

    status, err = server.post("/v1/sql", {"question": PARIS.question, "timeout_s": 0.01})
    assert status == 504 and "dropped" in err["error"]


def test_serve_an_export(world, tmp_path):
    from ft.export.__main__ import main as export

    out = tmp_path / "exported"
    assert export([str(world["run"]), "--out", str(out)]) == 0
    moved = tmp_path / "moved"  # an export keeps working after it is moved (sqlft.yaml points at the old place)
    shutil.move(out, moved)
    s = Server(moved, world["db"])
    try:
        status, a = s.post("/v1/sql", {"question": PARIS.question})
        assert status == 200 and a["sql"] == PARIS.query and a["rows"] == [[paris_count(world["db"])]]
        assert s.get("/v1/health")["base_available"] is False
        status, err = s.post("/v1/sql", {"question": PARIS.question, "base": True})
        assert status == 400 and "no base model" in err["error"]
    finally:
        s.stop()


def test_bad_input_one_line_exit_2_before_loading(world, tmp_path, capsys):
    from ft.serve.__main__ import main

    def serve(*args, source=world["run"]):
        code = main([str(source), *args])
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
        return lines[0]

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        port = str(taken.getsockname()[1])
        assert f"port {port} on 127.0.0.1 (--port) can't be used" in serve("--db", str(world["db"]), "--port", port)
    finally:
        taken.close()
    assert "'/no/such.sqlite' (--db) does not exist" in serve("--db", "/no/such.sqlite", "--port", "0")
    (tmp_path / "notes.txt").write_text("not a database")
    assert "cannot be opened as SQLite" in serve("--db", str(tmp_path / "notes.txt"), "--port", "0")
    assert "only SQLite files" in serve("--db", "postgresql://localhost/x", "--port", "0")
    assert "No LoRA adapter" in serve("--db", str(world["db"]), source=tmp_path)


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (.ci/run installs it)")
def test_playground_in_a_real_browser(server, world, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            page.goto(server.url + "/")
            page.wait_for_selector("#schema details[data-table='customers']")
            page.fill("#question", PARIS.question)
            page.click("#submit")
            page.wait_for_selector(".answer pre.sql", timeout=120_000)
            assert page.inner_text(".answer pre.sql") == PARIS.query
            assert page.inner_text(".answer .notes") == "validates against the schema"
            assert page.inner_text(".answer table.rows thead").strip() == "COUNT(*)"
            assert page.inner_text(".answer table.rows tbody td") == str(paris_count(world["db"]))
            assert "linked" in page.get_attribute("#schema details[data-table='customers']", "class")
            # a question over the model's context: its one-line error on the page, no answer
            page.fill("#question", "how many " * 400)
            page.click("#submit")
            page.wait_for_function("document.getElementById('error').textContent.length > 0", timeout=60_000)
            assert "context" in page.inner_text("#error") and page.query_selector(".answer") is None
            page.screenshot(path=str(tmp_path / "page.png"))
        finally:
            browser.close()
