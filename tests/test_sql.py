"""The SQL layer: parsing helpers, validation and sandboxed execution (comparison: tests/test_compare.py)."""
import hashlib
import sqlite3
import time

import pytest

from ft.sql.execute import execute, install_read_only_authorizer
from ft.sql.parse import extract_sql, normalize_sql, schema_catalog, split_ddl, tables_in_query
from ft.sql.validate import Validation, hallucinated_names, validate

DDL = """-- shop
CREATE TABLE customers (
    customer_id INTEGER PRIMARY KEY,
    customer_name TEXT NOT NULL,
    city TEXT,
    signup_date TEXT
);
CREATE TABLE orders (
    order_id INTEGER PRIMARY KEY,
    customer_id INTEGER REFERENCES customers(customer_id),
    order_date TEXT,
    amount REAL,
    status TEXT DEFAULT 'new;open'
);
CREATE TABLE products (product_id INTEGER PRIMARY KEY, name TEXT, category TEXT, price REAL);
CREATE TABLE order_items (order_id INTEGER, product_id INTEGER, quantity INTEGER, price REAL);
CREATE TABLE "Employee Records" ("Emp Id" INTEGER, "Full Name" TEXT, manager_id INTEGER);
"""

MACROS = [
    {"name": "fiscal_quarter", "params": ["d"],
     "body": "'Q' || ((CAST(strftime('%m', :d) AS INTEGER) + 2) / 3)", "doc": "calendar quarter of d"},
    {"name": "safe_div", "params": ["a", "b"],
     "body": "CASE WHEN :b = 0 THEN NULL ELSE 1.0 * :a / :b END", "doc": "a / b, NULL when b = 0"},
]


@pytest.fixture()
def db(tmp_path):
    path = tmp_path / "shop.sqlite"
    conn = sqlite3.connect(path)
    conn.executescript(DDL)
    conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?)",
                     [(1, "Ann", "Paris", "2023-01-05"), (2, "Bob", "Rome", "2023-03-10"),
                      (3, "Cid", "Paris", "2023-07-01")])
    conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                     [(i, i % 3 + 1, f"2024-{i % 12 + 1:02d}-15", 10.0 * i, "paid" if i % 2 else "new")
                      for i in range(1, 41)])
    conn.commit()
    conn.close()
    return path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------- parse


def test_schema_catalog_and_split_ddl():
    cat = schema_catalog(DDL)
    assert cat["customers"] == ["customer_id", "customer_name", "city", "signup_date"]
    assert cat["Employee Records"] == ["Emp Id", "Full Name", "manager_id"]
    blocks = split_ddl(DDL)
    assert [name for name, _ in blocks] == ["customers", "orders", "products", "order_items", "Employee Records"]
    # original text kept; the ';' inside the DEFAULT string is not a statement boundary
    assert blocks[1][1].startswith("CREATE TABLE orders (") and "'new;open'" in blocks[1][1]
    assert all(text.endswith(";") for _, text in blocks)
    # the kept blocks re-join into a valid schema
    conn = sqlite3.connect(":memory:")
    conn.executescript("\n".join(text for _, text in blocks[:2]))


def test_split_ddl_without_semicolons():
    # sqlite_master style: statements separated by blank lines only
    ddl = ("CREATE TABLE a (x INTEGER, y TEXT DEFAULT 'CREATE')\n\n"
           "CREATE TABLE b (z REFERENCES a(x))\n\nCREATE INDEX i ON b(z)")
    blocks = split_ddl(ddl)
    assert blocks == [("a", "CREATE TABLE a (x INTEGER, y TEXT DEFAULT 'CREATE')"),
                      ("b", "CREATE TABLE b (z REFERENCES a(x))")]
    assert schema_catalog(ddl) == {"a": ["x", "y"], "b": ["z"]}


def test_schema_catalog_sqlite_fallback_and_error():
    # sqlglot keeps WITHOUT ROWID tables as an opaque Command; SQLite parses them
    cat = schema_catalog("CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID;")
    assert cat == {"kv": ["k", "v"]}
    with pytest.raises(ValueError, match="broken"):
        schema_catalog("CREATE TABLE ok (a);\nCREATE TABLE broken (a int b c d,);")


def test_tables_in_query():
    sql = ("WITH big AS (SELECT customer_id FROM orders WHERE amount > 10) "
           "SELECT c.customer_name FROM Customers c JOIN big USING (customer_id) "
           "WHERE EXISTS (SELECT 1 FROM order_items oi WHERE oi.order_id = 1)")
    assert tables_in_query(sql) == {"orders", "customers", "order_items"}
    with pytest.raises(ValueError):
        tables_in_query("SELECT FROM WHERE (")


def test_normalize_sql_ignores_formatting():
    a = ("SELECT  T1.Customer_Name ,COUNT(*)\nFROM customers AS t1 JOIN orders t2 ON t1.customer_id=t2.customer_id\n"
         " WHERE city = 'Paris' GROUP BY 1;")
    b = ('select t1.customer_name, count(*) from "customers" as T1 join orders as T2 '
         "on T1.customer_id = T2.customer_id where city = 'Paris' group by 1")
    assert normalize_sql(a) == normalize_sql(b)
    assert normalize_sql("SELECT 1 WHERE x = 'Paris'") != normalize_sql("SELECT 1 WHERE x = 'paris'")
    # unparseable: whitespace / case normalised, string literals untouched
    assert normalize_sql("SELEC  Foo\n FROM  t WHERE a = 'AbC';") == normalize_sql("selec foo from t where a = 'AbC'")


@pytest.mark.parametrize("text, expected", [
    ("```sql\nSELECT name FROM t;\n```\nThis query lists names.", "SELECT name FROM t"),
    ("Here is the query:\n```SQL\nSELECT a\nFROM t\nWHERE b = ';'\n```", "SELECT a\nFROM t\nWHERE b = ';'"),
    ("```\nSELECT 1\n```", "SELECT 1"),
    ("```python\nprint(1)\n```\n```sql\nSELECT 2;\n```", "SELECT 2"),
    ("```sql\nSELECT a FROM t WHERE", "SELECT a FROM t WHERE"),  # generation cut off, no closing fence
    ("```sql\nSELECT a\nFROM t\n\nThis query returns a.", "SELECT a\nFROM t"),  # unclosed fence, then prose
    ("```sql\nSELECT a FROM t;\nSELECT b FROM t;\n```", "SELECT a FROM t"),
    ("SELECT a FROM t;\nExplanation: it selects a.", "SELECT a FROM t"),
    ("SELECT a\nFROM t\n\nThe query above returns a.", "SELECT a\nFROM t"),
    ("SELECT a FROM t\n### Question: next one", "SELECT a FROM t"),
    ("The answer is:\nSELECT count(*) FROM t", "SELECT count(*) FROM t"),
    ("With the schema above, this works:\nWITH x AS (SELECT 1) SELECT * FROM x;",
     "WITH x AS (SELECT 1) SELECT * FROM x"),
    ("Answer: SELECT a FROM t WHERE b = 'it''s;ok'; -- done", "SELECT a FROM t WHERE b = 'it''s;ok'"),
    ("SELECT a FROM t<|im_end|>", "SELECT a FROM t"),
    ("SELECT a FROM t\n```", "SELECT a FROM t"),  # prompt opened the fence, the model closed it
    ("  DELETE FROM t;  ", "DELETE FROM t"),
    ("```sql\nHere is the query:\n```sql\nSELECT 1\n```", "SELECT 1"),  # prose inside the first fence
    ("```sql\nWITH a AS (SELECT 1 AS x)\n\nSELECT x FROM a\n```", "WITH a AS (SELECT 1 AS x)\n\nSELECT x FROM a"),
    ("", ""),
])
def test_extract_sql(text, expected):
    assert extract_sql(text) == expected


# --------------------------------------------------------------------------------------------- validate

GOOD_QUERIES = [
    "SELECT customer_name FROM customers",
    "SELECT * FROM customers WHERE city = 'Paris'",
    "SELECT c.customer_name, SUM(o.amount) AS total FROM customers c JOIN orders o ON c.customer_id = o.customer_id "
    "GROUP BY c.customer_id ORDER BY total DESC LIMIT 5",
    "SELECT customer_name FROM customers WHERE customer_id IN (SELECT customer_id FROM orders WHERE amount > 100)",
    "SELECT customer_name FROM customers c WHERE EXISTS (SELECT 1 FROM orders o WHERE o.customer_id = c.customer_id)",
    "SELECT customer_name FROM customers WHERE EXISTS "
    "(SELECT 1 FROM orders WHERE orders.customer_id = customers.customer_id)",
    "WITH big AS (SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id) "
    "SELECT c.customer_name, big.total FROM big JOIN customers c USING (customer_id) WHERE big.total > 1000",
    "WITH t(cid, n) AS (SELECT customer_id, COUNT(*) FROM orders GROUP BY customer_id) "
    "SELECT cid, n FROM t ORDER BY n DESC",
    "WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < 10) SELECT x FROM cnt",
    "SELECT city AS place FROM customers UNION ALL SELECT status FROM orders ORDER BY place",
    "SELECT customer_id FROM orders INTERSECT SELECT customer_id FROM customers EXCEPT SELECT 1",
    "SELECT customer_id, RANK() OVER (PARTITION BY customer_id ORDER BY amount DESC) AS rnk FROM orders",
    "SELECT SUM(amount) OVER w FROM orders WINDOW w AS (PARTITION BY customer_id ORDER BY order_date "
    "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)",
    "SELECT lag(amount, 1, 0) OVER (ORDER BY order_date), ntile(4) OVER (ORDER BY amount), "
    "row_number() OVER () FROM orders",
    "SELECT order_id, CASE WHEN amount > 100 THEN 'big' ELSE 'small' END AS size FROM orders",
    "SELECT CASE status WHEN 'paid' THEN 1 ELSE 0 END FROM orders",
    "SELECT strftime('%Y', order_date) AS yr, COUNT(*) FROM orders GROUP BY yr HAVING COUNT(*) > 2",
    "SELECT * FROM orders WHERE order_date >= date('now', '-30 days')",
    "SELECT julianday(o.order_date) - julianday(c.signup_date) AS days FROM orders o JOIN customers c "
    "ON o.customer_id = c.customer_id",
    "SELECT date(order_date, '+1 month'), time('now'), datetime('now', 'localtime'), unixepoch() FROM orders",
    "SELECT fiscal_quarter(order_date) AS q, safe_div(SUM(amount), COUNT(*)) FROM orders GROUP BY q",
    "SELECT t.customer_id, t.total FROM (SELECT customer_id, SUM(amount) AS total FROM orders GROUP BY customer_id) "
    "AS t WHERE t.total > 5",
    "SELECT count(*) FROM (SELECT DISTINCT customer_id FROM orders)",
    "SELECT o.* FROM orders o WHERE o.amount = (SELECT MAX(amount) FROM orders WHERE customer_id = o.customer_id)",
    "SELECT (SELECT COUNT(*) FROM orders o WHERE o.customer_id = c.customer_id) AS n FROM customers c",
    "SELECT p.name, SUM(oi.quantity * oi.price) AS revenue FROM products p JOIN order_items oi "
    "ON p.product_id = oi.product_id GROUP BY p.name ORDER BY revenue DESC",
    'SELECT e."Full Name", m."Full Name" AS manager FROM "Employee Records" e '
    'LEFT JOIN "Employee Records" m ON e.manager_id = m."Emp Id"',
    "SELECT IFNULL(city, '?'), COALESCE(city, 'x'), IIF(city IS NULL, 0, 1), NULLIF(city, ''), "
    "substr(customer_name, 1, 3), upper(city), length(customer_name), instr(customer_name, 'a'), "
    "replace(city, 'a', 'b'), trim(city), round(1.234, 2), group_concat(customer_name, ', ') FROM customers",
    "SELECT CAST(amount AS INTEGER), typeof(amount), printf('%.2f', amount), abs(amount), TOTAL(amount) FROM orders",
    "SELECT customer_name FROM customers WHERE customer_name LIKE 'A%' COLLATE NOCASE AND city GLOB 'P*'",
    "SELECT status, amount FROM orders ORDER BY amount DESC NULLS LAST LIMIT 10 OFFSET 5",
    "SELECT customer_id, COUNT(*) AS n FROM orders GROUP BY 1 ORDER BY 2 DESC",
    "SELECT city, COUNT(*) c FROM customers GROUP BY city HAVING c > 1",
    "SELECT rowid, customer_name FROM customers",
    "SELECT * FROM customers NATURAL JOIN orders",
    "SELECT c.city, o.status, COUNT(*) FROM customers c, orders o WHERE c.customer_id = o.customer_id "
    "GROUP BY c.city, o.status",
    "select CUSTOMER_NAME from CUSTOMERS C where C.CITY = 'x'",
    'SELECT customer_name FROM customers WHERE city = "Paris"',  # SQLite: "Paris" is a string here
    "SELECT value FROM json_each('[1, 2]')",
    "VALUES (1, 2), (3, 4)",
]


@pytest.mark.parametrize("sql", GOOD_QUERIES)
def test_validate_accepts_correct_queries(sql):
    v = validate(sql, DDL, MACROS)
    assert v.ok, v.to_dict()
    assert v.errors == []


def _only(v: Validation, kind: str):
    assert not v.ok
    kinds = [e.kind for e in v.errors]
    assert kind in kinds, v.to_dict()
    return next(e for e in v.errors if e.kind == kind)


def test_validate_unknown_column_with_suggestion():
    e = _only(validate("SELECT custmer_name FROM customers", DDL), "unknown_column")
    assert (e.name, e.suggestion) == ("custmer_name", "customer_name")
    # alias-qualified
    e = _only(validate("SELECT c.custmer_name FROM customers AS c", DDL), "unknown_column")
    assert (e.name, e.suggestion) == ("custmer_name", "customer_name")
    assert "c.custmer_name" in e.message
    # a column of a table the query doesn't use: point at it
    e = _only(validate("SELECT quantity FROM products", DDL), "unknown_column")
    assert e.suggestion == "order_items.quantity"
    # quoted names keep their spelling in suggestions
    e = _only(validate('SELECT e."Full Nam" FROM "Employee Records" e', DDL), "unknown_column")
    assert e.suggestion == "Full Name"


def test_validate_unknown_table_and_alias():
    e = _only(validate("SELECT customer_name FROM customer", DDL), "unknown_table")
    assert (e.name, e.suggestion) == ("customer", "customers")
    assert [x.kind for x in validate("SELECT customer_name FROM customer", DDL).errors] == ["unknown_table"]
    e = _only(validate("SELECT x.customer_name FROM customers c", DDL), "unknown_table")
    assert e.name == "x"
    assert (hallucinated_names("SELECT c.custmer_name FROM customers c JOIN ordrs o ON 1", DDL)
            == ["ordrs", "custmer_name"])


def test_validate_cte_and_subquery_columns():
    e = _only(validate("WITH t AS (SELECT customer_id AS cid FROM orders) SELECT t.customer_id FROM t", DDL),
              "unknown_column")
    assert e.name == "customer_id"
    e = _only(validate("WITH t(cid) AS (SELECT customer_id FROM orders) SELECT cid, amount FROM t", DDL),
              "unknown_column")
    assert e.name == "amount"
    e = _only(validate("SELECT t.totl FROM (SELECT SUM(amount) AS total FROM orders) t", DDL), "unknown_column")
    assert (e.name, e.suggestion) == ("totl", "total")
    e = _only(validate("SELECT city FROM customers UNION SELECT status FROM orders ORDER BY cty", DDL),
              "unknown_column")
    assert e.suggestion == "city"


def test_validate_ambiguous_column():
    e = _only(validate("SELECT customer_id FROM customers JOIN orders ON customers.customer_id = orders.customer_id",
                       DDL), "ambiguous_column")
    assert e.name == "customer_id"


def test_validate_functions_and_macros():
    e = _only(validate("SELECT fiscal_quarter(order_date, 1) FROM orders", DDL, MACROS), "macro_arity")
    assert e.name == "fiscal_quarter" and "1 argument" in e.message
    _only(validate("SELECT safe_div(amount) FROM orders", DDL, MACROS), "macro_arity")
    # a macro that isn't declared for this row
    assert _only(validate("SELECT fiscal_quarter(order_date) FROM orders", DDL),
                 "unknown_function").name == "fiscal_quarter"
    e = _only(validate("SELECT my_func(amount) FROM orders", DDL, MACROS), "unknown_function")
    assert e.name == "my_func"
    # functions of other dialects, with the SQLite equivalent as the suggestion
    assert _only(validate("SELECT LEN(customer_name) FROM customers", DDL), "unknown_function").suggestion == "length"
    assert _only(validate("SELECT YEAR(order_date) FROM orders", DDL), "unknown_function").name.upper() == "YEAR"


@pytest.mark.parametrize("sql", [
    "DELETE FROM customers", "DROP TABLE customers", "UPDATE orders SET amount = 0",
    "INSERT INTO customers VALUES (9, 'x', 'y', 'z')", "CREATE TABLE x (a)", "ATTACH 'other.db' AS o",
    "PRAGMA journal_mode=WAL", "VACUUM", "WITH x AS (SELECT 1) DELETE FROM orders", "SELECT 1; SELECT 2",
])
def test_validate_rejects_non_select(sql):
    _only(validate(sql, DDL), "not_select")


@pytest.mark.parametrize("sql", ["SELEC customer_name FROM customers", "SELECT customer_name FROM customers WHERE", ""])
def test_validate_parse_error(sql):
    _only(validate(sql, DDL), "parse")


def test_validate_ignores_empty_statements_and_trailing_comments():
    assert validate("SELECT city FROM customers; -- done", DDL).ok
    assert validate("SELECT city FROM customers;;", DDL).ok


def test_validate_accepts_catalog_dict_and_serialises():
    v = validate("SELECT nme FROM t", {"t": ["name"]})
    assert v.to_dict() == {"ok": False, "errors": [{"kind": "unknown_column", "name": "nme", "suggestion": "name",
                                                     "message": "no such column: nme"}]}


# --------------------------------------------------------------------------------------------- execute


def test_execute_reads(db):
    r = execute(db, "SELECT customer_name, city FROM customers ORDER BY customer_id;")
    assert r.ok and r.error is None
    assert r.columns == ["customer_name", "city"]
    assert r.rows == [("Ann", "Paris"), ("Bob", "Rome"), ("Cid", "Paris")]
    assert not r.truncated and r.elapsed_s >= 0


def test_execute_path_with_uri_characters(tmp_path):
    folder = tmp_path / "odd ?#% name"
    folder.mkdir()
    path = folder / "x.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.execute("INSERT INTO t VALUES (1)")
    conn.commit()
    conn.close()
    r = execute(path, "SELECT a FROM t;; -- trailing comment")
    assert r.ok, r.error
    assert r.rows == [(1,)]


def test_authorizer_alone_blocks_writes(tmp_path):
    # Defence in depth: even on a writable connection, the authorizer refuses what isn't a read.
    conn = sqlite3.connect(tmp_path / "w.sqlite")
    conn.execute("CREATE TABLE t (a)")
    install_read_only_authorizer(conn)
    assert conn.execute("SELECT count(*) FROM t, json_each('[1]')").fetchone() == (0,)
    for sql in ["INSERT INTO t VALUES (1)", "DROP TABLE t", "PRAGMA user_version = 5", "CREATE TEMP TABLE x (a)",
                f"ATTACH '{tmp_path / 'new.sqlite'}' AS n", "SELECT load_extension('x')"]:
        with pytest.raises(sqlite3.DatabaseError, match="not authorized"):
            conn.execute(sql)
    conn.close()
    assert not (tmp_path / "new.sqlite").exists()


def test_execute_max_rows_truncates(db):
    r = execute(db, "SELECT order_id FROM orders ORDER BY order_id", max_rows=5)
    assert r.ok and r.truncated and r.rows == [(i,) for i in range(1, 6)]
    r = execute(db, "SELECT order_id FROM orders", max_rows=40)
    assert r.ok and not r.truncated and len(r.rows) == 40


def test_execute_with_macros(db):
    r = execute(db, "SELECT fiscal_quarter(order_date), safe_div(amount, 0) FROM orders WHERE order_id = 5", MACROS)
    assert r.ok, r.error
    assert r.rows == [("Q2", None)]
    assert "fiscal_quarter" in execute(db, "SELECT fiscal_quarter(order_date) FROM orders").error


def test_execute_errors_are_returned(db, tmp_path):
    assert "no such column" in execute(db, "SELECT nope FROM customers").error
    assert execute(tmp_path / "missing.sqlite", "SELECT 1").error
    assert not execute(db, "SELEC 1").ok


@pytest.mark.parametrize("sql", [
    "DROP TABLE customers",
    "DELETE FROM orders",
    "UPDATE orders SET amount = 0",
    "INSERT INTO customers VALUES (9, 'x', 'y', 'z')",
    "CREATE TABLE evil (a)",
    "CREATE TEMP TABLE evil (a)",
    "PRAGMA journal_mode=WAL",
    "PRAGMA user_version=5",
    "VACUUM",
    "SELECT 1; DELETE FROM orders",
    "DELETE FROM orders; SELECT 1",
    "SELECT 1; DROP TABLE customers;",
    "WITH x AS (SELECT 1) DELETE FROM orders",
    "REPLACE INTO customers VALUES (1, 'x', 'y', 'z')",
    "SELECT load_extension('/tmp/evil')",
    "BEGIN",
])
def test_execute_refuses_writes_and_leaves_db_untouched(db, sql):
    before = sha(db)
    r = execute(db, sql)
    assert not r.ok and r.error and r.rows is None
    assert sha(db) == before
    assert {p.name for p in db.parent.iterdir()} == {db.name}  # no -wal / -journal / new files


@pytest.mark.parametrize("template", ["ATTACH DATABASE '{p}' AS evil", "VACUUM INTO '{p}'",
                                      "SELECT 1; ATTACH '{p}' AS evil"])
def test_execute_refuses_attach_and_vacuum_into(db, tmp_path, template):
    target = tmp_path / "created.sqlite"
    before = sha(db)
    r = execute(db, template.format(p=target))
    assert not r.ok
    assert not target.exists()
    assert sha(db) == before


def test_execute_stops_runaway_query(db):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c"
    start = time.monotonic()
    r = execute(db, sql, timeout_s=0.5)
    assert time.monotonic() - start < 0.5 + 0.5
    assert not r.ok and "timeout" in r.error


@pytest.mark.skipif(not hasattr(sqlite3.Connection, "setlimit"), reason="Connection.setlimit needs Python 3.11")
def test_execute_bounds_value_size(db):
    r = execute(db, "SELECT length(zeroblob(200000000))")
    assert not r.ok and "too big" in r.error.lower()
