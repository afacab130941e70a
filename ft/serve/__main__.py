"""`sqlft serve` (`python -m ft.serve`): one model answering questions on databases over HTTP, with a playground.

    sqlft serve exported --db shop.sqlite                       # an `sqlft export` folder
    sqlft serve runs/demo --db shop.sqlite --port 8000          # a run's adapter (the base answer can be shown beside)
    sqlft serve runs/demo --db a.sqlite --db b.sqlite --samples 8 --window-ms 20 --max-batch 8
    sqlft serve exported --db postgresql://analyst@warehouse:5432/sales   # or duckdb:///sales.duckdb

Databases are named as everywhere in sqlft (ft.sql.engine.database): a SQLite file, duckdb:///F, or a PostgreSQL
URL whose password comes from PGPASSWORD / ~/.pgpass, never the URL. The model loads once. Each question is
prompted exactly as in training and evaluation (the schema read from the live database, the engine's dialect named,
the schema linked to fit the model's context), answered greedily (or by voting over --samples executed candidates,
or retried on validation failure with --retries), validated against the schema and executed read-only with the
engine's safety layers, eval.timeout_s and eval.max_rows, as `sqlft eval` does. Questions arriving within
--window-ms of each other are generated in one batch (up to --max-batch). Open http://HOST:PORT/ for the page; the
API is under /v1 (see ft/serve/app.py, /docs).
Bad input (a port in use, a database that can't be opened, a macros file that can't be read) is one `error:` line
and exit 2, before the model is loaded.
"""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

from ft.cli import Alias, Command, parse
from ft.config import ConfigError
from ft.constants import EXIT_USAGE
from ft.data.rows import DataError
from ft.model import ModelError
from ft.sql.guard import DatabaseError

EXPORT_MARKER = "sqlft.yaml"


def _source_config(args):
    from ft.inference import resolve_adapter

    folder = Path(args.source)
    if (folder / EXPORT_MARKER).is_file():
        return folder / EXPORT_MARKER
    return resolve_adapter(args.source)[1]


def _own(p) -> None:
    p.add_argument("source", help="an `sqlft export` folder, or a run folder / adapter / checkpoint")
    p.add_argument("--db", action="append", required=True,
                   help="database to answer on: a SQLite file, sqlite:///F, duckdb:///F or postgresql://user@host:"
                        "port/db (password from PGPASSWORD / ~/.pgpass); repeat for several, the first is the default")
    p.add_argument("--schema", help="file with the CREATE TABLE statements [read from the database]")
    p.add_argument("--macros", help="JSON file with in-house macros [{name, params, body, doc}]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--window-ms", type=float, default=20.0,
                   help="how long the first waiting question waits for others to share its batch [20]")
    p.add_argument("--max-batch", type=int, default=8, help="questions generated together at most [8]")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds a request waits for its answer [120]")


COMMAND = Command(
    name="serve",
    description=__doc__,
    add_arguments=_own,
    default_config=_source_config,
    aliases=[
        Alias("--model", "model.name_or_path", "base model [the run's]"),
        Alias("--quantization", "quantization.mode"),
        Alias("--samples", "eval.samples", "default samples of /v1/chat/completions (a /v1/sql request sets its own)"),
        Alias("--retries", "eval.retries", "sampled alternatives when an answer fails validation"),
        Alias("--max-new-tokens", "eval.max_new_tokens"),
    ],
)


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before the model loads: a port in use is known at once."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"port {port} on {host} (--port) can't be used: {e.strerror or e}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _name_of(db) -> str:
    """What a request's "db" calls a database: a file's stem, a PostgreSQL URL's dbname."""
    if db.is_file:
        return Path(db.location).stem
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(db.location).get("dbname") or db.url


def databases(args) -> dict:
    """The served databases by name, through the engine interface (ft.sql.engine): each checked reachable, its
    schema read from the live database (or --schema), its functions as macros (or --macros)."""
    from ft.serve.app import Database, from_engine, open_database, read_schema, tables_of

    macros = None
    if args.macros:
        try:
            macros = json.loads(Path(args.macros).read_text())
        except (OSError, ValueError) as e:
            raise DataError(f"macros file '{args.macros}' (--macros) can't be read: {e}") from None
    schema = None
    if args.schema:
        try:
            schema = Path(args.schema).read_text()
        except OSError as e:
            raise DataError(f"schema file '{args.schema}' (--schema) can't be read: {e.strerror or e}") from None
    out = {}
    for given in args.db:
        db = open_database(given)
        ddl = schema if schema is not None else read_schema(db)
        own = macros if args.macros else from_engine(db, "functions", db.functions) or None  # as sqlft generate
        try:
            tables = tables_of(ddl)
        except ValueError as e:
            raise DatabaseError(f"schema of '{db.url}' can't be read: {e}") from None
        name = _name_of(db)
        name = name if name not in out else db.url
        out[name] = Database(name, db.url, db.dialect, ddl, own, tables)
    return out


def load(cfg, args):
    """(model, tokenizer, a name for it): the export folder's merged model, or base + the run's adapter."""
    from ft.config import resolve
    from ft.inference import load_for_inference, prefer_unquantized_on_cpu

    folder = Path(args.source)
    if (folder / EXPORT_MARKER).is_file():
        cfg.model.name_or_path, cfg.model.gguf_file, cfg.quantization.mode = str(folder.resolve()), None, "none"
        model, tok = load_for_inference(resolve(cfg))
        return model, tok, f"{folder.name} (merged)"
    if note := prefer_unquantized_on_cpu(cfg, explicit="quantization.mode" in args.overrides):
        print(note, file=sys.stderr)
    model, tok = load_for_inference(resolve(cfg), args.source)
    return model, tok, f"{cfg.model.name_or_path} + {args.source}"


def build(cfg, args):
    """Everything but the listening: (FastAPI app, Answerer). Tests and bench/serve.py start it their own way."""
    from ft.serve.app import ServeState, create_app
    from ft.serve.engine import Answerer

    dbs = databases(args)
    model, tok, name = load(cfg, args)
    answerer = Answerer(model, tok, cfg, window_s=args.window_ms / 1000, max_batch=args.max_batch)
    state = ServeState(answerer, cfg, dbs, name, model.config.max_position_embeddings, args.timeout)
    return create_app(state), answerer


def serve_command(cfg, args) -> int:
    import uvicorn

    sock = bind(args.host, args.port)
    app, answerer = build(cfg, args)
    print(f"sqlft serve: http://{args.host}:{args.port}/  (API: /v1/sql, /v1/schema, /v1/chat/completions)",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    try:
        server.run(sockets=[sock])
    finally:
        answerer.close()
    return 0


def config_for(args, extra: dict | None = None):
    """The config: --config, else the export's sqlft.yaml (pointed at where the export is now: it may have moved
    since it was written), else the adapter's run config; with the command line's overrides."""
    from ft.config import load_config

    overrides = dict(args.overrides) | (extra or {})
    if (Path(args.source) / EXPORT_MARKER).is_file():
        overrides.setdefault("model.name_or_path", str(Path(args.source).resolve()))
    return load_config(args.config or _source_config(args), overrides)


def main(argv: list[str] | None = None) -> int:
    from ft.system import set_process_defaults

    set_process_defaults()
    try:
        _, args = parse(COMMAND, argv, load=False)
        return serve_command(config_for(args), args)
    except (ConfigError, DataError, DatabaseError, ModelError, FileNotFoundError) as e:
        text = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        print(f"error: {text}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
