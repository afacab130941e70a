"""`sqlft serve` under load: questions per second and p50 / p95 latency at 1, 4 and 16 concurrent clients, with
batching (questions within --window-ms share a generation, up to --max-batch) and without (one at a time).

    python bench/serve.py --source exported --db ~/.cache/sqlft/data/bundled-v5-s0/databases/sales.sqlite \
        [--levels 1 4 16] [--requests 32] [--window-ms 20] [--max-batch 16]

For each setting a real server is started (`sqlft serve` in its own process, on a free loopback port) and loaded
once; each level's clients (threads) send POST /v1/sql with held-out questions of that database (the bundled
eval split's, by the database's name; or --questions FILE, one a line) until --requests answers came back.
Latency is per request, from sending to the whole answer (generation, validation and execution); questions/s is
answers over the level's wall time. Writes bench/results/serve.json with the machine and its load average: the
timings mean something only on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from export import commit  # noqa: E402
from train_throughput import machine, versions  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def questions_for(db: str, path: str | None, cache_dir: str) -> list[str]:
    if path:
        return [q.strip() for q in Path(path).read_text().splitlines() if q.strip()]
    from ft.data.sources import load_source

    rows = load_source("bundled", split="eval", cache_dir=cache_dir)
    out = [r.question for r in rows if r.db_id == Path(db).stem]
    if not out:
        raise SystemExit(f"no bundled held-out question is about '{Path(db).stem}': give --questions FILE")
    return out


def post(url: str, question: str, timeout: float) -> tuple[float, dict]:
    req = urllib.request.Request(url + "/v1/sql", json.dumps({"question": question}).encode(),
                                 {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = json.loads(r.read())
    return time.perf_counter() - t0, body


def level(url: str, questions: list[str], clients: int, requests: int, timeout: float) -> dict:
    lock, latencies, batches, errors = threading.Lock(), [], [], []
    counter = iter(range(requests))

    def client():
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                seconds, body = post(url, questions[i % len(questions)], timeout)
            except Exception as e:  # noqa: BLE001 - counted, reported
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                continue
            with lock:
                latencies.append(seconds)
                batches.append(body.get("batch_size", 1))

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(latencies)
    pct = lambda q: lat[min(len(lat) - 1, max(0, int(round(q * len(lat) + 0.5)) - 1))] if lat else None  # noqa: E731
    return {"clients": clients, "answered": len(lat), "errors": len(errors), "error_examples": errors[:3],
            "wall_s": wall, "questions_per_s": len(lat) / wall, "latency_p50_s": pct(0.5), "latency_p95_s": pct(0.95),
            "latency_mean_s": statistics.fmean(lat) if lat else None,
            "mean_batch_size": statistics.fmean(batches) if batches else None}


def screenshot(url: str, question: str, path: str, timeout: float) -> None:
    """The playground in headless Chromium (Debian's) after one question: the README's picture."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(url + "/")
            page.wait_for_selector("#schema details")
            page.fill("#question", question)
            page.click("#submit")
            page.wait_for_selector(".answer pre.sql, #error:not(:empty)", timeout=timeout * 1000)
            page.screenshot(path=path, full_page=True)
        finally:
            browser.close()
    print(f"wrote {path}")


def run_setting(args, name: str, window_ms: float, max_batch: int, questions: list[str]) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "ft.cli", "serve", args.source, "--db", args.db, "--port", str(port),
           "--window-ms", str(window_ms), "--max-batch", str(max_batch), "--timeout", str(args.timeout),
           *(["--max-new-tokens", str(args.max_new_tokens)] if args.max_new_tokens else [])]
    server = subprocess.Popen(cmd, cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + args.start_timeout
        while True:
            if server.poll() is not None:
                raise SystemExit(f"sqlft serve exited {server.returncode}:\n{server.stdout.read()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/v1/health", timeout=5) as r:
                    health = json.loads(r.read())
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("sqlft serve did not start in time") from None
                time.sleep(1)
        if args.screenshot:
            screenshot(url, questions[0], args.screenshot, args.timeout)
            return {}
        post(url, questions[0], args.timeout)  # warm-up: first-call costs are not the server's steady state
        levels = []
        for clients in args.levels:
            r = level(url, questions, clients, args.requests, args.timeout)
            print(name, r, flush=True)
            levels.append(r)
        return {"window_ms": window_ms, "max_batch": max_batch, "model": health["model"], "levels": levels}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", required=True, help="an export folder, or a run / adapter")
    ap.add_argument("--db", required=True)
    ap.add_argument("--questions", help="file with one question a line [the bundled held-out ones on --db]")
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--requests", type=int, default=32, help="answers per level")
    ap.add_argument("--window-ms", type=float, default=20.0)
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=0, help="[the model's eval.max_new_tokens]")
    ap.add_argument("--timeout", type=float, default=600.0)
    ap.add_argument("--start-timeout", type=float, default=600.0)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "serve.json"))
    ap.add_argument("--screenshot", help="instead: ask one question on the page and save a screenshot here")
    ap.add_argument("--question", help="with --screenshot: the question [the first held-out one]")
    args = ap.parse_args()

    questions = questions_for(args.db, args.questions, str(Path("~/.cache/sqlft/data").expanduser()))
    if args.screenshot:
        questions = [args.question or questions[0]]
        run_setting(args, "screenshot", args.window_ms, args.max_batch, questions)
        return 0
    start, head = machine(), commit()
    settings = {"batched": run_setting(args, "batched", args.window_ms, args.max_batch, questions),
                "one_at_a_time": run_setting(args, "one_at_a_time", 0.0, 1, questions)}
    ratios = {}
    for b, o in zip(settings["batched"]["levels"], settings["one_at_a_time"]["levels"]):
        ratios[f"{b['clients']}_clients"] = {"questions_per_s": b["questions_per_s"] / o["questions_per_s"],
                                            "latency_p50": b["latency_p50_s"] / o["latency_p50_s"]}
    out = {"benchmark": "serve", "date": time.strftime("%Y-%m-%d %H:%M"), "machine": start,
           "load_avg_at_end": os.getloadavg(), "commit": head,
           "command": "python bench/serve.py " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
           "versions": versions(), "source": args.source, "db": args.db, "questions": len(questions),
           "requests_per_level": args.requests, "settings": settings, "batched_over_one_at_a_time": ratios}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(ratios, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
