"""The HTTP side of `sqlft serve` (FastAPI): a JSON API, an OpenAI-compatible chat route and the playground page.

    POST /v1/sql               {"question", "db"?, "samples"?, "base"?, "timeout_s"?} -> SQL (in the database's
                               dialect), validation notes, rows, candidates and votes (samples > 0), timings, linked
                               tables, resampled, hit_token_limit
    GET  /v1/schema            the database's engine, tables, columns and CREATE TABLE text
    GET  /v1/health            model, databases, batching settings, counters
    POST /v1/chat/completions  OpenAI-style: system message = schema (else the server's database), last user
                               message = question; the answer is the checked SQL
    GET  /                     the playground (static/index.html)

A request waits for its answer while watching its client: one that disconnects or passes its timeout is abandoned
(ft.serve.engine.Job.abandon), so it costs no more work.
"""
from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from ft.data.rows import DataError, Row
from ft.sql.engine import database, display_name
from ft.sql.guard import DatabaseError, redact
from ft.sql.parse import split_ddl

STATIC = Path(__file__).parent / "static"


def open_database(name: str, flag: str = "--db"):
    """The ft.sql.engine Database `name` stands for (a SQLite / DuckDB file or a PostgreSQL URL), checked to be
    usable now: DatabaseError (one line naming the database, never a password) otherwise."""
    db = database(name)  # DatabaseError for a malformed URL, a password in it, an engine we don't support
    if problem := db.problem():
        raise DatabaseError(f"database {problem} ({flag})")
    return db


def from_engine(db, what: str, call):
    """call() (one of the engine interface's reads), its failure one line naming the database (never a password)."""
    try:
        return call()
    except Exception as e:  # noqa: BLE001 - the engine's own error (permissions, a lost connection), as one line
        raise DatabaseError(f"database '{db.url}' (--db): its {what} can't be read: "
                            f"{redact(str(e).splitlines()[0] if str(e) else type(e).__name__)}") from None


def read_schema(db) -> str:
    """The CREATE TABLE statements of the live database, through the engine interface (as `sqlft generate --db`)."""
    ddl = from_engine(db, "schema", db.schema)
    if not ddl.strip():
        raise DatabaseError(f"database '{db.url}' (--db) has no table this role can read; give --schema")
    return ddl


def tables_of(ddl: str) -> list[dict]:
    from ft.sql.parse import schema_catalog

    catalog = schema_catalog(ddl)
    return [{"name": name, "columns": catalog.get(name, []), "ddl": text}
            for name, text in split_ddl(ddl)]


@dataclass
class Database:
    name: str  # what a request's "db" names it by (the file's stem, a PostgreSQL URL's dbname)
    url: str  # the engine interface's name for it (ft.sql.engine.Database.url): the row's database, safe to show
    dialect: str  # sqlglot's name: the prompt and validation follow it
    schema: str
    macros: list | None = None
    tables: list[dict] = field(default_factory=list)


@dataclass
class ServeState:
    answerer: object  # ft.serve.engine.Answerer
    cfg: object
    databases: dict[str, Database]  # the first is the default
    model_name: str
    context_length: int
    request_timeout_s: float = 120.0


class SqlRequest(BaseModel):
    question: str = Field(min_length=1, max_length=4000)
    db: str | None = None
    samples: int = Field(0, ge=0, le=32)
    base: bool = False  # also the base model's answer (an adapter being served: the adapter switched off)
    timeout_s: float | None = Field(None, gt=0, le=3600)


class ChatMessage(BaseModel):
    role: str
    content: str


class ChatRequest(BaseModel):
    model: str | None = None
    messages: list[ChatMessage]
    n: int = 1  # accepted, one answer is returned


def find_database(databases: dict[str, Database], name: str | None) -> Database:
    """The served database a request names: by name, by URL or another spelling of it (a relative path,
    sqlite:///...); None names the first. KeyError for one the server doesn't answer on."""
    if name is None:
        return next(iter(databases.values()))
    try:
        url = database(name).url
    except DatabaseError:
        url = None
    for db in databases.values():
        if name in (db.name, db.url) or url == db.url:
            return db
    raise KeyError(f"unknown database '{redact(name)}': this server answers on {', '.join(databases)}")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(state: ServeState) -> FastAPI:
    from ft.data.linking import make_fitter

    app = FastAPI(title="sqlft serve", docs_url="/docs")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request, exc):  # one line, as every other error: "question: ...", not pydantic's list
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ())[1:]) or "body"
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")
    answerer, cfg = state.answerer, state.cfg
    fit = make_fitter(answerer.tok, cfg.data.template, cfg.data, state.context_length,
                      reserve=cfg.eval.max_new_tokens)
    default_db = next(iter(state.databases))
    dialect_set = None if cfg.data.dialect == "auto" else cfg.data.dialect

    async def wait(job, request: Request, timeout_s: float):
        """The job's answer, or None when the client disconnected or the timeout passed (the job abandoned)."""
        fut = asyncio.wrap_future(job.future)
        deadline = time.perf_counter() + timeout_s
        while True:
            done, _ = await asyncio.wait({fut}, timeout=0.05)
            if done:
                return fut.result()
            if await request.is_disconnected() or time.perf_counter() > deadline:
                job.abandon()
                return None

    async def ask(request: Request, question: str, db: Database | None, schema: str | None, samples: int,
                  base: bool, timeout_s: float) -> tuple[int, dict]:
        # The SQL's dialect is the database's (the prompt names it as training does), unless data.dialect says
        # otherwise (as in `sqlft generate`); a chat request's own schema is taken to be in the server's dialect.
        dialect = dialect_set or (None if db is not None else state.databases[default_db].dialect)
        row = Row(question=question, query="", schema=schema if schema is not None else db.schema,
                  db=db.url if db is not None else None, dialect=dialect,
                  macros=db.macros if db is not None else None)
        try:
            prompt = await asyncio.to_thread(fit, row)
        except DataError as e:  # over the model's context even when linked
            return 422, {"error": str(e)}
        linked = [name for name, _ in split_ddl(prompt.schema)]
        if base and not answerer.has_base:
            return 400, {"error": "no base model to compare with: this server runs a merged model (serve the run's "
                                  "adapter to compare)"}
        jobs = {"finetuned": answerer.submit(row, prompt, samples)}
        if base:
            jobs["base"] = answerer.submit(row, prompt, samples, base=True)
        results = await asyncio.gather(*(wait(j, request, timeout_s) for j in jobs.values()))
        if any(r is None for r in results):
            for j in jobs.values():
                j.abandon()
            return 504, {"error": f"no answer within {timeout_s:g} s (or the client left); the question was dropped"}
        out = dict(zip(jobs, results))
        answer = out["finetuned"] | {"question": question, "db": db.name if db else None,
                                     "dialect": display_name(row.sql_dialect), "linked_tables": linked,
                                     "schema_linked": prompt is not row}
        if base:
            answer["base"] = out["base"]
        return 200, answer

    @app.get("/")
    async def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/v1/health")
    async def health():
        return {"status": "ok", "model": state.model_name,
                "databases": {n: {"url": d.url, "engine": display_name(d.dialect)} for n, d in state.databases.items()},
                "base_available": answerer.has_base, "window_s": answerer.window_s, "max_batch": answerer.max_batch,
                "max_new_tokens": cfg.eval.max_new_tokens, "stats": answerer.stats}

    @app.get("/v1/schema")
    async def schema(db: str | None = None):
        try:
            d = find_database(state.databases, db)
        except KeyError as e:
            return _error(404, str(e).strip("'\""))
        return {"db": d.name, "url": d.url, "engine": display_name(d.dialect), "tables": d.tables, "ddl": d.schema}

    @app.post("/v1/sql")
    async def sql(req: SqlRequest, request: Request):
        try:
            d = find_database(state.databases, req.db)
        except KeyError as e:
            return _error(404, str(e).strip("'\""))
        status, body = await ask(request, req.question, d, None, req.samples, req.base,
                                 req.timeout_s or state.request_timeout_s)
        return JSONResponse(body, status_code=status)

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request):
        system = [m.content for m in req.messages if m.role == "system"]
        users = [m.content for m in req.messages if m.role == "user"]
        if not users:
            return _error(400, "no user message: it holds the question")
        d = None if system else state.databases[default_db]
        status, body = await ask(request, users[-1], d, system[-1] if system else None, cfg.eval.samples, False,
                                 state.request_timeout_s)
        if status != 200:
            return JSONResponse(body, status_code=status)
        return {"id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
                "model": req.model or state.model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": body["sql"]},
                             "finish_reason": "length" if body["hit_token_limit"] else "stop"}],
                "sqlft": {k: body[k] for k in ("valid", "validation_errors", "linked_tables", "resampled")}}

    return app
