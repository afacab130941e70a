"""Result values in one canonical form, whichever engine produced them.

Every engine's rows pass through `canonical_row` as they are fetched, so the same answer compares equal on SQLite,
DuckDB and PostgreSQL (and is written to predictions files as plain JSON), while a different answer never does:
nothing here rounds or merges distinct values of one type.

    Decimal      -> int when integral, else the nearest float (what SQLite returns for the same arithmetic)
    bool         -> 1 / 0 (SQLite has no boolean type: TRUE is 1)
    date         -> 'YYYY-MM-DD' (SQLite stores dates as ISO text)
    datetime     -> 'YYYY-MM-DD HH:MM:SS[.ffffff]', aware ones converted to UTC first (SQLite's datetime() form)
    time         -> 'HH:MM:SS[.ffffff]'
    timedelta    -> '<days> days HH:MM:SS[.ffffff]' (intervals; DuckDB and psycopg both give timedelta)
    UUID         -> its text; memoryview / bytearray -> bytes; lists (arrays) -> tuples; dicts (JSON) -> sorted JSON
    None, int, float, str, bytes -> themselves
"""
from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid


def _interval(v: dt.timedelta) -> str:
    sign = "-" if v < dt.timedelta(0) else ""
    v = abs(v)
    hours, rest = divmod(v.seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    frac = f".{v.microseconds:06d}" if v.microseconds else ""
    return f"{sign}{v.days} days {hours:02d}:{minutes:02d}:{seconds:02d}{frac}"


def canonical(v):
    """One value in canonical form (see the module docstring)."""
    if v is None or isinstance(v, (str, int, float, bytes)) and not isinstance(v, bool):
        return v
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            return float(v)
        return int(v) if v == v.to_integral_value() else float(v)
    if isinstance(v, dt.datetime):  # before date: a datetime is a date
        if v.tzinfo is not None:
            v = v.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return v.isoformat(sep=" ")
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, dt.time):
        return v.replace(tzinfo=None).isoformat()
    if isinstance(v, dt.timedelta):
        return _interval(v)
    if isinstance(v, (memoryview, bytearray)):
        return bytes(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (list, tuple)):
        return tuple(canonical(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v, sort_keys=True, default=str)
    return str(v)  # anything else an engine may hand back (e.g. an IP network): its text


def canonical_row(row) -> tuple:
    return tuple(canonical(v) for v in row)
