"""The words of questions and schema names: stop words, abbreviations, synonyms, a light stemmer. Both sides of a
match (a question's terms, a table's or column's terms) go through the same functions, so they meet."""
from __future__ import annotations

import re
from functools import lru_cache

_STOP = frozenset("""
a an the of in on at to for from by with and or not no is are was were be been being do does did has have had
what which who whom whose when where why how many much more most less least than then there their them they it its
this that these those each every all any some per show list give find tell me top over under above below between
during within into out as same other also only just both either about after before since until can could would
should will may please display get whose ever never yes one two three four five ten
""".split())

# Abbreviations found in table and column names -> the word a question would use.
_ABBREV = {
    "qty": "quantity", "amt": "amount", "num": "number", "nbr": "number", "dept": "department", "emp": "employee",
    "cust": "customer", "addr": "address", "desc": "description", "fin": "finance", "mkt": "marketing",
    "mfg": "manufacturing", "sup": "support", "prod": "product", "proc": "procurement", "prj": "project",
    "fac": "facility", "acct": "account", "txn": "transaction", "mgr": "manager", "loc": "location",
    "cat": "category", "yr": "year", "dob": "birth", "org": "organization", "pct": "percent", "lvl": "level",
    "wh": "warehouse", "inv": "invoice", "hr": "employee", "mktg": "marketing", "ctry": "country", "po": "purchase",
}
# Question words -> the word a schema would use.
_SYNONYMS = {
    "staff": "employee", "worker": "employee", "personnel": "employee", "hire": "employee", "client": "customer",
    "buyer": "customer", "spend": "amount", "spent": "amount", "paid": "payment", "pay": "salary", "wage": "salary",
    "earn": "salary", "ship": "shipment", "shipped": "shipment", "deliver": "delivery", "delivered": "delivery",
    "sold": "sale", "sell": "sale", "bought": "order", "purchased": "order", "price": "price", "cost": "cost",
    "revenue": "amount", "country": "country", "nation": "country", "town": "city", "kid": "child",
}

_CAMEL = re.compile(r"([a-z0-9])([A-Z])")
_WORD = re.compile(r"[a-z0-9]+")


def _stem(w: str) -> str:
    """A light stemmer: plural and -ing / -ed / -ment endings, so 'shipped', 'shipments' and 'ship' meet."""
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 4 and (w.endswith(("sses", "shes", "ches", "xes")) or w.endswith("tuses")):
        w = w[:-2]  # addresses, boxes, statuses
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix, keep in (("ment", 4), ("ing", 3), ("ed", 3)):
        if w.endswith(suffix) and len(w) - len(suffix) >= keep:
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiouls":
                w = w[:-1]  # shipp -> ship
            break
    return w


@lru_cache(maxsize=200_000)
def _name_terms(name: str) -> tuple[str, ...]:
    """Stemmed words of an identifier or comment: snake_case and camelCase split, abbreviations expanded (both the
    abbreviation and its expansion are kept)."""
    out: list[str] = []
    for w in _WORD.findall(_CAMEL.sub(r"\1 \2", name).lower()):
        if w.isdigit():
            continue
        out.append(_stem(w))
        if w in _ABBREV:
            out.append(_stem(_ABBREV[w]))
    return tuple(out)


def question_terms(text: str) -> tuple[str, ...]:
    """The question's content words, stemmed (stop words and numbers dropped), synonyms added, in order."""
    out: list[str] = []
    for w in _WORD.findall(_CAMEL.sub(r"\1 \2", text).lower()):
        if w in _STOP or w.isdigit() or len(w) < 2:
            continue
        s = _stem(w)
        if s in _STOP:
            continue
        out.append(s)
        syn = _SYNONYMS.get(w) or _SYNONYMS.get(s)
        if syn and _stem(syn) != s:
            out.append(_stem(syn))
    return tuple(dict.fromkeys(out))


def _partial(a: str, b: str) -> bool:
    """One word is a prefix of the other, both at least 4 letters long ('employ' / 'employee')."""
    return len(a) >= 4 and len(b) >= 4 and (a.startswith(b) or b.startswith(a))

