"""The bundled databases: compact DDL, deterministic rows, and each database's in-house macros.

Every builder takes a connection and a `random.Random`, so the same seed gives the same rows. DDL is kept
short on purpose (the whole CREATE TABLE block goes into every prompt); dates are ISO 'YYYY-MM-DD' text
spread over 2022-2024, money is REAL rounded to cents.
"""
from __future__ import annotations

import math
import random
import sqlite3
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Callable

from .warehouse import build_warehouse

START, END = date(2022, 1, 1), date(2024, 12, 31)

# --------------------------------------------------------------------------------------------- macros
# Macro bodies are scalar SQLite expressions over :params (see ft/sql/macros.py).


def _month(p: str) -> str:
    return f"CAST(strftime('%m', :{p}) AS INTEGER)"


FISCAL_QUARTER = {
    "name": "fiscal_quarter",
    "params": ["d"],
    # The fiscal year starts on 1 April and is named after the calendar year it starts in.
    "body": f"'FY' || (CAST(strftime('%Y', :d) AS INTEGER) - ({_month('d')} < 4)) || '-Q' || "
    f"((({_month('d')} + 8) % 12) / 3 + 1)",
    "doc": "fiscal quarter of ISO date d, e.g. '2024-05-10' -> 'FY2024-Q1' (fiscal year starts 1 April)",
}
BUSINESS_DAYS = {
    "name": "business_days",
    "params": ["d1", "d2"],
    # Weekdays in [d1, d2): whole weeks give 5 each; the r = n % 7 leftover days starting on weekday w
    # contain a Sunday iff (7 - w) % 7 < r and a Saturday iff (13 - w) % 7 < r.
    "body": "(CAST(julianday(:d2) - julianday(:d1) AS INTEGER) / 7) * 5"
    " + CAST(julianday(:d2) - julianday(:d1) AS INTEGER) % 7"
    " - ((7 - CAST(strftime('%w', :d1) AS INTEGER)) % 7 < CAST(julianday(:d2) - julianday(:d1) AS INTEGER) % 7)"
    " - ((13 - CAST(strftime('%w', :d1) AS INTEGER)) % 7 < CAST(julianday(:d2) - julianday(:d1) AS INTEGER) % 7)",
    "doc": "number of weekdays (Mon-Fri) from ISO date d1 up to, not including, d2",
}
NET_REVENUE = {
    "name": "net_revenue",
    "params": ["quantity", "unit_price", "discount"],
    "body": "ROUND(:quantity * :unit_price * (1 - :discount), 2)",
    "doc": "revenue of an order line after its discount (discount is a fraction, 0.1 = 10%)",
}
NIGHTS = {
    "name": "nights",
    "params": ["check_in", "check_out"],
    "body": "CAST(julianday(:check_out) - julianday(:check_in) AS INTEGER)",
    "doc": "number of nights of a stay between two ISO dates",
}
SEASON = {
    "name": "season",
    "params": ["d"],
    "body": f"CASE WHEN {_month('d')} IN (6, 7, 8, 12) THEN 'peak' WHEN {_month('d')} IN (4, 5, 9, 10) "
    "THEN 'shoulder' ELSE 'off' END",
    "doc": "hotel season of ISO date d: 'peak' (Jun-Aug, Dec), 'shoulder' (Apr, May, Sep, Oct) or 'off'",
}
SALARY_BAND = {
    "name": "salary_band",
    "params": ["salary"],
    "body": "CASE WHEN :salary < 50000 THEN 'B1' WHEN :salary < 75000 THEN 'B2' WHEN :salary < 100000 THEN 'B3' "
    "WHEN :salary < 140000 THEN 'B4' ELSE 'B5' END",
    "doc": "pay band of an annual salary: 'B1' (< 50k), 'B2' (< 75k), 'B3' (< 100k), 'B4' (< 140k), 'B5'",
}
DISTANCE_BAND = {
    "name": "distance_band",
    "params": ["km"],
    "body": "CASE WHEN :km < 300 THEN 'short' WHEN :km < 1000 THEN 'medium' ELSE 'long' END",
    "doc": "haul class of a route length in km: 'short' (< 300), 'medium' (< 1000) or 'long'",
}
NET_AMOUNT = {
    "name": "net_amount",
    "params": ["amount", "tax_rate"],
    "body": "ROUND(:amount / (1 + :tax_rate), 2)",
    "doc": "amount without tax, from a gross amount and its tax rate (0.2 = 20%)",
}
SLA_DAYS = {
    "name": "sla_days",
    "params": ["priority"],
    "body": "CASE :priority WHEN 'urgent' THEN 1 WHEN 'high' THEN 2 WHEN 'medium' THEN 5 ELSE 10 END",
    "doc": "business days allowed to close a ticket of the given priority (urgent 1, high 2, medium 5, low 10)",
}
AGE_YEARS = {
    "name": "age_years",
    "params": ["birth_date", "on_date"],
    "body": "CAST(strftime('%Y', :on_date) AS INTEGER) - CAST(strftime('%Y', :birth_date) AS INTEGER)"
    " - (strftime('%m-%d', :on_date) < strftime('%m-%d', :birth_date))",
    "doc": "age in whole years on on_date of someone born on birth_date (ISO dates)",
}

# ------------------------------------------------------------------------------------------ helpers

FIRST = (
    "James Mary Robert Patricia John Jennifer Michael Linda David Elizabeth William Barbara Richard Susan "
    "Joseph Jessica Thomas Sarah Carlos Karen Daniel Lisa Matthew Nancy Anthony Sandra Mark Ashley Paul "
    "Emily Steven Donna Andrew Michelle Kenneth Carol Joshua Amanda Kevin Melissa Brian Deborah Omar "
    "Stephanie Hiroshi Laura Ahmed Sofia Lucas Elena Mateo Chloe Ivan Priya Noah Amara Luca Ingrid Raj Mei"
).split()
LAST = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez Gonzalez "
    "Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris Sanchez Clark "
    "Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill Flores Green Adams "
    "Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Tanaka Kowalski Muller Rossi Dubois Silva "
    "Novak Larsen Okafor Patel Chen"
).split()
CITIES = [
    ("New York", "USA"), ("Chicago", "USA"), ("Austin", "USA"), ("Seattle", "USA"), ("Boston", "USA"),
    ("Toronto", "Canada"), ("Vancouver", "Canada"), ("London", "UK"), ("Manchester", "UK"),
    ("Paris", "France"), ("Lyon", "France"), ("Berlin", "Germany"), ("Munich", "Germany"),
    ("Madrid", "Spain"), ("Barcelona", "Spain"), ("Rome", "Italy"), ("Milan", "Italy"),
    ("Amsterdam", "Netherlands"), ("Stockholm", "Sweden"), ("Tokyo", "Japan"), ("Osaka", "Japan"),
    ("Sydney", "Australia"), ("Melbourne", "Australia"), ("Sao Paulo", "Brazil"), ("Mexico City", "Mexico"),
    ("Dublin", "Ireland"), ("Zurich", "Switzerland"), ("Singapore", "Singapore"),
]


def iso(d: date) -> str:
    return d.isoformat()


def rand_date(rng: random.Random, lo: date = START, hi: date = END) -> date:
    return lo + timedelta(days=rng.randint(0, max(0, (hi - lo).days)))


def skewed(rng: random.Random, n: int, sigma: float = 1.0) -> list[float]:
    """Popularity weights with a long tail, so counts per entity differ (fewer ties in top-k answers)."""
    return [rng.lognormvariate(0.0, sigma) for _ in range(n)]


def people(rng: random.Random, n: int) -> list[str]:
    """n distinct 'First Last' names (unique, so a name identifies one person in questions)."""
    seen: set[str] = set()
    out = []
    while len(out) < n:
        name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def money(rng: random.Random, lo: float, hi: float) -> float:
    """Log-uniform amount in [lo, hi], rounded to cents: many small values, a few large ones."""
    return round(math.exp(rng.uniform(math.log(lo), math.log(hi))), 2)


def insert(conn: sqlite3.Connection, table: str, rows: list[tuple]) -> None:
    marks = ", ".join("?" * len(rows[0]))
    conn.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)


def create(conn: sqlite3.Connection, ddl: str) -> None:
    for stmt in ddl.strip().split(";"):
        if stmt.strip():
            conn.execute(stmt)


# ------------------------------------------------------------------------------------------- sales

SALES_DDL = """
CREATE TABLE categories (category_id INTEGER PRIMARY KEY, name TEXT NOT NULL, department TEXT);
CREATE TABLE products (product_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    category_id INTEGER REFERENCES categories(category_id), unit_price REAL, stock INTEGER);
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, country TEXT,
    segment TEXT, signup_date TEXT);
CREATE TABLE orders (order_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(customer_id),
    order_date TEXT, status TEXT, channel TEXT);
CREATE TABLE order_items (item_id INTEGER PRIMARY KEY, order_id INTEGER REFERENCES orders(order_id),
    product_id INTEGER REFERENCES products(product_id), quantity INTEGER, unit_price REAL, discount REAL);
"""

CATEGORIES = {  # name: (price range, product nouns)
    "Electronics": ((15, 900), "Headphones Monitor Keyboard Mouse Webcam Speaker Charger Tablet Router".split()),
    "Furniture": ((40, 1200), "Desk Chair Bookcase Sofa Cabinet Table Lamp Shelf Stool".split()),
    "Office Supplies": ((2, 60), "Notebook Stapler Pen Binder Folder Marker Planner Organizer Tape".split()),
    "Kitchen": ((6, 300), "Blender Kettle Toaster Skillet Knife Mixer Grinder Teapot Juicer".split()),
    "Sports": ((8, 450), "Racket Yoga Mat Dumbbell Helmet Backpack Bottle Tent Jersey".split()),
    "Toys": ((5, 120), "Puzzle Robot Kite Blocks Drone Doll Train Marbles Scooter".split()),
    "Books": ((7, 60), "Cookbook Atlas Novel Guide Journal Almanac Anthology Workbook Memoir".split()),
    "Garden": ((9, 350), "Hose Shovel Planter Sprinkler Rake Pruner Grill Lantern Birdhouse".split()),
}
CATEGORY_DEPARTMENT = {"Electronics": "Tech", "Furniture": "Home", "Office Supplies": "Office", "Kitchen": "Home",
                       "Sports": "Leisure", "Toys": "Leisure", "Books": "Leisure", "Garden": "Home"}
BRANDS = "Nova Apex Zen Orbit Vista Pulse Terra Luma Echo Summit Polar Aurora".split()


def build_sales(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, SALES_DDL)
    insert(conn, "categories", [(i + 1, name, CATEGORY_DEPARTMENT[name]) for i, name in enumerate(CATEGORIES)])
    products = []
    for cat_id, (cat, ((lo, hi), nouns)) in enumerate(CATEGORIES.items(), 1):
        names = sorted({f"{b} {n}" for b in BRANDS for n in nouns})
        for name in rng.sample(names, 15):
            products.append((len(products) + 1, name, cat_id, money(rng, lo, hi), rng.randint(0, 250)))
    insert(conn, "products", products)

    customers = []
    city_w = skewed(rng, len(CITIES))
    for i, name in enumerate(people(rng, 400), 1):
        city, country = rng.choices(CITIES, city_w)[0]
        segment = rng.choices(["Consumer", "Corporate", "Small Business"], [6, 3, 2])[0]
        # Half the customers predate the order history, so every year has orders; the rest keep joining.
        signup = rand_date(rng, date(2021, 1, 1), date(2021, 12, 31)) if rng.random() < 0.5 else \
            rand_date(rng, START, date(2024, 6, 30))
        customers.append((i, name, city, country, segment, iso(signup)))
    insert(conn, "customers", customers)

    # A few products are never ordered, so "never ordered" questions have answers.
    prod_w = [0.0 if rng.random() < 0.05 else w for w in skewed(rng, len(products))]
    cust_w = skewed(rng, len(customers))
    orders, items = [], []
    for oid in range(1, 2501):
        cust = rng.choices(customers, cust_w)[0]
        day = rand_date(rng, max(START, date.fromisoformat(cust[5])), END)
        status = rng.choices(["delivered", "shipped", "cancelled", "returned"], [78, 8, 9, 5])[0]
        channel = rng.choices(["online", "store", "phone"], [6, 3, 1])[0]
        orders.append((oid, cust[0], iso(day), status, channel))
        for prod in rng.choices(products, prod_w, k=rng.choices([1, 2, 3, 4], [4, 3, 2, 1])[0]):
            discount = rng.choices([0.0, 0.05, 0.1, 0.15, 0.2], [10, 3, 3, 1, 1])[0]
            items.append((len(items) + 1, oid, prod[0], rng.choices([1, 2, 3, 5, 10], [8, 4, 2, 1, 1])[0],
                          prod[3], discount))
    insert(conn, "orders", orders)
    insert(conn, "order_items", items)


# ------------------------------------------------------------------------------------------ hotels

HOTELS_DDL = """
CREATE TABLE hotels (hotel_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, stars INTEGER);
CREATE TABLE rooms (room_id INTEGER PRIMARY KEY, hotel_id INTEGER REFERENCES hotels(hotel_id),
    room_number TEXT, room_type TEXT, nightly_rate REAL);
CREATE TABLE guests (guest_id INTEGER PRIMARY KEY, name TEXT NOT NULL, country TEXT, loyalty_tier TEXT);
CREATE TABLE bookings (booking_id INTEGER PRIMARY KEY, guest_id INTEGER REFERENCES guests(guest_id),
    room_id INTEGER REFERENCES rooms(room_id), check_in TEXT, check_out TEXT, status TEXT);
CREATE TABLE services (service_id INTEGER PRIMARY KEY, name TEXT NOT NULL, price REAL);
CREATE TABLE service_usage (usage_id INTEGER PRIMARY KEY, booking_id INTEGER REFERENCES bookings(booking_id),
    service_id INTEGER REFERENCES services(service_id), quantity INTEGER, usage_date TEXT);
"""
HOTEL_NAMES = [
    ("Grand Harbor Hotel", "Sydney", 5), ("Maple Leaf Inn", "Toronto", 3), ("Royal Crescent", "London", 5),
    ("Seine View Suites", "Paris", 4), ("Sakura Garden Hotel", "Tokyo", 4), ("Alpine Lodge", "Zurich", 4),
    ("Canal House", "Amsterdam", 3), ("Sunset Boulevard Hotel", "Madrid", 3), ("Lakeside Resort", "Chicago", 4),
    ("Old Town Residence", "Rome", 3), ("Skyline Tower Hotel", "New York", 5), ("Nordic Light Hotel", "Stockholm", 4),
]
ROOM_TYPES = {"single": 80, "double": 120, "suite": 260, "family": 170}
SERVICES = [("Breakfast", 18.0), ("Spa Treatment", 95.0), ("Parking", 25.0), ("Laundry", 15.0),
            ("Room Service", 32.0), ("Airport Transfer", 55.0), ("Minibar", 12.5), ("Late Checkout", 40.0),
            ("Gym Pass", 10.0), ("Dinner Buffet", 45.0)]


def build_hotels(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, HOTELS_DDL)
    insert(conn, "hotels", [(i, n, c, s) for i, (n, c, s) in enumerate(HOTEL_NAMES, 1)])
    rooms = []
    for hid, (_, _, stars) in enumerate(HOTEL_NAMES, 1):
        for r in range(rng.randint(12, 28)):
            rtype = rng.choices(list(ROOM_TYPES), [3, 5, 1, 2])[0]
            rate = round(ROOM_TYPES[rtype] * (0.6 + 0.25 * stars) * rng.uniform(0.85, 1.2), 2)
            rooms.append((len(rooms) + 1, hid, f"{r // 10 + 1}{r % 10 + 1:02d}", rtype, rate))
    insert(conn, "rooms", rooms)
    countries = sorted({c for _, c in CITIES})
    country_w = skewed(rng, len(countries))
    guests = [(i, n, rng.choices(countries, country_w)[0],
               rng.choices(["none", "silver", "gold", "platinum"], [10, 5, 3, 1])[0])
              for i, n in enumerate(people(rng, 600), 1)]
    insert(conn, "guests", guests)
    insert(conn, "services", [(i, n, p) for i, (n, p) in enumerate(SERVICES, 1)])

    bookings, usage = [], []
    room_w, guest_w = skewed(rng, len(rooms)), skewed(rng, len(guests))
    for bid in range(1, 2601):
        room, guest = rng.choices(rooms, room_w)[0], rng.choices(guests, guest_w)[0]
        check_in = rand_date(rng, START, date(2024, 12, 20))
        stay = rng.choices([1, 2, 3, 4, 5, 7, 10], [5, 6, 5, 3, 2, 2, 1])[0]
        status = rng.choices(["completed", "cancelled", "no-show", "confirmed"], [80, 12, 3, 5])[0]
        bookings.append((bid, guest[0], room[0], iso(check_in), iso(check_in + timedelta(days=stay)), status))
        if status == "completed":
            for sid in rng.sample(range(1, len(SERVICES) + 1), rng.choices([0, 1, 2, 3], [3, 4, 2, 1])[0]):
                usage.append((len(usage) + 1, bid, sid, rng.choices([1, 2, 3], [6, 2, 1])[0],
                              iso(check_in + timedelta(days=rng.randint(0, stay - 1)))))
    insert(conn, "bookings", bookings)
    insert(conn, "service_usage", usage)


# ---------------------------------------------------------------------------------------------- hr

HR_DDL = """
CREATE TABLE departments (department_id INTEGER PRIMARY KEY, name TEXT NOT NULL, location TEXT, budget REAL);
CREATE TABLE positions (position_id INTEGER PRIMARY KEY, title TEXT NOT NULL, level INTEGER);
CREATE TABLE employees (employee_id INTEGER PRIMARY KEY, name TEXT NOT NULL,
    department_id INTEGER REFERENCES departments(department_id),
    position_id INTEGER REFERENCES positions(position_id),
    manager_id INTEGER REFERENCES employees(employee_id), hire_date TEXT, salary REAL);
CREATE TABLE reviews (review_id INTEGER PRIMARY KEY, employee_id INTEGER REFERENCES employees(employee_id),
    review_date TEXT, rating INTEGER);
CREATE TABLE leave_requests (leave_id INTEGER PRIMARY KEY,
    employee_id INTEGER REFERENCES employees(employee_id), start_date TEXT, end_date TEXT, leave_type TEXT,
    status TEXT);
"""
DEPARTMENTS = [("Engineering", "Berlin"), ("Sales", "New York"), ("Marketing", "London"), ("Finance", "Zurich"),
               ("Human Resources", "London"), ("Operations", "Chicago"), ("Customer Support", "Dublin"),
               ("Legal", "New York")]
PAY_FACTOR = [1.15, 1.0, 0.95, 1.1, 0.9, 0.92, 0.8, 1.2]  # per department, so averages differ
POSITIONS = [("Intern", 1), ("Associate", 2), ("Analyst", 2), ("Engineer", 3), ("Specialist", 3),
             ("Senior Engineer", 4), ("Team Lead", 4), ("Manager", 5), ("Director", 6)]


def build_hr(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, HR_DDL)
    insert(conn, "departments", [(i, n, loc, float(rng.randrange(800_000, 6_000_000, 50_000)))
                                 for i, (n, loc) in enumerate(DEPARTMENTS, 1)])
    insert(conn, "positions", [(i, t, lvl) for i, (t, lvl) in enumerate(POSITIONS, 1)])
    emps = []
    dept_w = [8, 5, 3, 2, 1.5, 3, 4, 1]
    pos_w = [2, 6, 5, 7, 5, 4, 2, 0, 0]  # managers and directors are placed explicitly below
    heads: dict[int, int] = {}
    for i, name in enumerate(people(rng, 480), 1):
        dept = rng.choices(range(1, len(DEPARTMENTS) + 1), dept_w)[0]
        pos = 9 if dept not in heads else (8 if rng.random() < 0.06 else rng.choices(range(1, 10), pos_w)[0])
        heads.setdefault(dept, i)
        level = POSITIONS[pos - 1][1]
        salary = round((28000 + 17000 * level * rng.uniform(0.8, 1.3)) * PAY_FACTOR[dept - 1], -2)
        manager = None if heads[dept] == i else heads[dept]
        emps.append((i, name, dept, pos, manager, iso(rand_date(rng, date(2014, 1, 1), date(2024, 10, 31))), salary))
    insert(conn, "employees", emps)

    reviews, leaves = [], []
    for emp in emps:
        hired = date.fromisoformat(emp[5])
        for year in (2022, 2023, 2024):
            if hired < date(year, 6, 1) and rng.random() < 0.9:
                day = rand_date(rng, date(year, 11, 1), date(year, 12, 15))
                reviews.append((len(reviews) + 1, emp[0], iso(day), rng.choices([1, 2, 3, 4, 5], [1, 3, 8, 6, 2])[0]))
        for _ in range(rng.choices([0, 1, 2, 3, 4, 5], [2, 3, 4, 3, 2, 1])[0]):
            start = rand_date(rng, max(hired, START), END)
            kind = rng.choices(["vacation", "sick", "parental", "unpaid"], [10, 5, 1, 1])[0]
            length = {"vacation": rng.randint(1, 15), "sick": rng.randint(1, 5),
                      "parental": rng.randint(30, 90), "unpaid": rng.randint(1, 10)}[kind]
            status = rng.choices(["approved", "pending", "rejected"], [12, 2, 1])[0]
            leaves.append((len(leaves) + 1, emp[0], iso(start), iso(start + timedelta(days=length)), kind, status))
    insert(conn, "reviews", reviews)
    insert(conn, "leave_requests", leaves)


# --------------------------------------------------------------------------------------- logistics

LOGISTICS_DDL = """
CREATE TABLE warehouses (warehouse_id INTEGER PRIMARY KEY, name TEXT NOT NULL, city TEXT, capacity INTEGER);
CREATE TABLE carriers (carrier_id INTEGER PRIMARY KEY, name TEXT NOT NULL, mode TEXT, rating REAL);
CREATE TABLE routes (route_id INTEGER PRIMARY KEY, warehouse_id INTEGER REFERENCES warehouses(warehouse_id),
    destination TEXT, distance_km INTEGER);
CREATE TABLE shipments (shipment_id INTEGER PRIMARY KEY, route_id INTEGER REFERENCES routes(route_id),
    carrier_id INTEGER REFERENCES carriers(carrier_id), ship_date TEXT, delivery_date TEXT, weight_kg REAL,
    cost REAL);
"""
WAREHOUSES = [("North Hub", "Chicago"), ("East Gate", "New York"), ("Bay Depot", "Seattle"),
              ("Lone Star DC", "Austin"), ("Harbor Point", "Boston"), ("Rhine Center", "Berlin"),
              ("Thames Yard", "London"), ("Iberia Park", "Madrid"), ("Tiber Depot", "Rome"),
              ("Nordic Base", "Stockholm")]
CARRIERS = [("SwiftFreight", "road"), ("RailLink", "rail"), ("AeroCargo", "air"), ("BlueWave Shipping", "sea"),
            ("Metro Couriers", "road"), ("TransEuro", "road"), ("SkyBridge Express", "air"),
            ("Continental Rail", "rail")]
DESTINATIONS = ["Denver", "Miami", "Atlanta", "Dallas", "Phoenix", "Portland", "Detroit", "Montreal",
                "Ottawa", "Hamburg", "Vienna", "Prague", "Warsaw", "Lisbon", "Porto", "Brussels", "Oslo",
                "Copenhagen", "Helsinki", "Naples", "Valencia", "Glasgow", "Leeds", "Frankfurt"]


def build_logistics(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, LOGISTICS_DDL)
    insert(conn, "warehouses", [(i, n, c, rng.randrange(5000, 60000, 500)) for i, (n, c) in enumerate(WAREHOUSES, 1)])
    insert(conn, "carriers", [(i, n, m, round(rng.uniform(2.8, 5.0), 1)) for i, (n, m) in enumerate(CARRIERS, 1)])
    routes = []
    for wid in range(1, len(WAREHOUSES) + 1):
        for dest in rng.sample(DESTINATIONS, 6):
            routes.append((len(routes) + 1, wid, dest, rng.choice([rng.randint(60, 299), rng.randint(300, 999),
                                                                     rng.randint(1000, 4500)])))
    insert(conn, "routes", routes)
    shipments = []
    route_w, carrier_w = skewed(rng, len(routes)), [6, 3, 2, 1, 5, 4, 2, 2]
    speed = {"road": 2, "rail": 4, "air": 1, "sea": 12}  # base days in transit
    for sid in range(1, 3201):
        route = rng.choices(routes, route_w)[0]
        cid = rng.choices(range(1, len(CARRIERS) + 1), carrier_w)[0]
        ship = rand_date(rng)
        days = speed[CARRIERS[cid - 1][1]] + route[3] // 800 + rng.choices([0, 1, 2, 5], [6, 3, 2, 1])[0]
        delivered = ship + timedelta(days=days)
        # Recent shipments may still be in transit: delivery_date stays NULL.
        delivery = None if delivered > END or rng.random() < 0.03 else iso(delivered)
        weight = money(rng, 0.5, 2500)
        mode_factor = {"air": 4, "road": 1, "rail": 0.7, "sea": 0.4}[CARRIERS[cid - 1][1]]
        cost = round(12 + weight * route[3] * 0.0009 * mode_factor * rng.uniform(0.9, 1.1), 2)
        shipments.append((sid, route[0], cid, iso(ship), delivery, weight, cost))
    insert(conn, "shipments", shipments)


# ----------------------------------------------------------------------------------------- finance

FINANCE_DDL = """
CREATE TABLE departments (department_id INTEGER PRIMARY KEY, name TEXT NOT NULL, region TEXT);
CREATE TABLE accounts (account_id INTEGER PRIMARY KEY, name TEXT NOT NULL, account_type TEXT,
    department_id INTEGER REFERENCES departments(department_id));
CREATE TABLE transactions (transaction_id INTEGER PRIMARY KEY,
    account_id INTEGER REFERENCES accounts(account_id), txn_date TEXT, amount REAL, tax_rate REAL,
    vendor TEXT);
CREATE TABLE budgets (budget_id INTEGER PRIMARY KEY, account_id INTEGER REFERENCES accounts(account_id),
    fiscal_quarter TEXT, amount REAL);
"""
FIN_DEPTS = [("Corporate", "EMEA"), ("Retail", "Americas"), ("Wholesale", "EMEA"), ("Research", "Americas"),
             ("Manufacturing", "APAC"), ("Marketing", "Americas"), ("IT", "APAC")]
ACCOUNT_KINDS = {
    "expense": ["Travel", "Office Rent", "Software Licenses", "Payroll", "Utilities", "Consulting",
                "Advertising", "Equipment", "Training", "Insurance"],
    "revenue": ["Product Sales", "Service Fees", "Licensing Income", "Subscriptions"],
}
VENDORS = ["Acme Corp", "Globex", "Initech", "Umbrella Ltd", "Stark Industries", "Wayne Enterprises",
           "Hooli", "Vandelay Imports", "Cyberdyne", "Soylent Co", "Tyrell Corp", "Wonka Industries",
           "Oscorp", "Gringotts", "Dunder Mifflin"]


def fiscal_quarter(d: date) -> str:
    fy = d.year - (d.month < 4)
    return f"FY{fy}-Q{(d.month + 8) % 12 // 3 + 1}"


def build_finance(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, FINANCE_DDL)
    insert(conn, "departments", [(i, n, r) for i, (n, r) in enumerate(FIN_DEPTS, 1)])
    accounts = []
    for did, (dept, _) in enumerate(FIN_DEPTS, 1):
        for kind, names in ACCOUNT_KINDS.items():
            for name in rng.sample(names, 3 if kind == "expense" else 1):
                accounts.append((len(accounts) + 1, f"{dept} {name}", kind, did))
    insert(conn, "accounts", accounts)
    scale = {a[0]: money(rng, 200, 20000) for a in accounts}
    txns = []
    acc_w, vendor_w = skewed(rng, len(accounts)), skewed(rng, len(VENDORS))
    for tid in range(1, 4001):
        acc = rng.choices(accounts, acc_w)[0]
        amount = round(scale[acc[0]] * rng.uniform(0.3, 2.0), 2)
        tax = rng.choices([0.0, 0.07, 0.1, 0.2], [3, 2, 2, 3])[0]
        vendor = rng.choices(VENDORS, vendor_w)[0] if acc[2] == "expense" else None
        txns.append((tid, acc[0], iso(rand_date(rng)), amount, tax, vendor))
    insert(conn, "transactions", txns)
    quarters = sorted({fiscal_quarter(START + timedelta(days=d)) for d in range((END - START).days + 1)})
    budgets = []
    for acc in accounts:
        for fq in quarters:
            budgets.append((len(budgets) + 1, acc[0], fq, round(scale[acc[0]] * rng.uniform(4, 40), -2)))
    insert(conn, "budgets", budgets)


# ----------------------------------------------------------------------------------------- support

SUPPORT_DDL = """
CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT NOT NULL, plan TEXT, country TEXT,
    signup_date TEXT);
CREATE TABLE agents (agent_id INTEGER PRIMARY KEY, name TEXT NOT NULL, team TEXT, hire_date TEXT);
CREATE TABLE tickets (ticket_id INTEGER PRIMARY KEY, customer_id INTEGER REFERENCES customers(customer_id),
    agent_id INTEGER REFERENCES agents(agent_id), opened_date TEXT, closed_date TEXT, priority TEXT,
    category TEXT);
CREATE TABLE ticket_events (event_id INTEGER PRIMARY KEY, ticket_id INTEGER REFERENCES tickets(ticket_id),
    event_date TEXT, event_type TEXT);
"""
TICKET_CATEGORIES = ["billing", "login", "bug", "feature request", "performance", "data export"]


def build_support(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, SUPPORT_DDL)
    countries = sorted({c for _, c in CITIES})
    customers = [(i, n, rng.choices(["free", "pro", "enterprise"], [6, 3, 1])[0], rng.choice(countries),
                  iso(rand_date(rng, START, date(2024, 6, 30)))) for i, n in enumerate(people(rng, 450), 1)]
    insert(conn, "customers", customers)
    agents = [(i, n, rng.choice(["Tier 1", "Tier 2", "Billing", "Enterprise"]),
               iso(rand_date(rng, date(2018, 1, 1), date(2023, 6, 30)))) for i, n in enumerate(people(rng, 24), 1)]
    insert(conn, "agents", agents)
    tickets, events = [], []
    cust_w, agent_w = skewed(rng, len(customers)), skewed(rng, len(agents))
    for tid in range(1, 3001):
        cust = rng.choices(customers, cust_w)[0]
        opened = rand_date(rng, date.fromisoformat(cust[4]), END)
        priority = rng.choices(["low", "medium", "high", "urgent"], [5, 6, 3, 1])[0]
        closed_day = opened + timedelta(days=rng.choices([0, 1, 2, 3, 5, 8, 14, 30], [3, 5, 4, 3, 3, 2, 1, 1])[0])
        closed = None if closed_day > END or rng.random() < 0.04 else iso(closed_day)
        tickets.append((tid, cust[0], rng.choices(agents, agent_w)[0][0], iso(opened), closed, priority,
                        rng.choices(TICKET_CATEGORIES, [5, 3, 4, 2, 2, 1])[0]))
        events.append((len(events) + 1, tid, iso(opened), "opened"))
        for _ in range(rng.choices([0, 1, 2, 3], [3, 4, 2, 1])[0]):
            day = opened + timedelta(days=rng.randint(0, max(0, (closed_day - opened).days)))
            events.append((len(events) + 1, tid, iso(min(day, END)),
                           rng.choices(["comment", "escalated", "reassigned", "reopened"], [8, 2, 2, 1])[0]))
        if closed:
            events.append((len(events) + 1, tid, closed, "closed"))
    insert(conn, "tickets", tickets)
    insert(conn, "ticket_events", events)


# ------------------------------------------------------------------------------------------ clinic

CLINIC_DDL = """
CREATE TABLE doctors (doctor_id INTEGER PRIMARY KEY, name TEXT NOT NULL, specialty TEXT, hire_date TEXT);
CREATE TABLE patients (patient_id INTEGER PRIMARY KEY, name TEXT NOT NULL, birth_date TEXT, gender TEXT,
    city TEXT);
CREATE TABLE appointments (appointment_id INTEGER PRIMARY KEY,
    patient_id INTEGER REFERENCES patients(patient_id), doctor_id INTEGER REFERENCES doctors(doctor_id),
    appointment_date TEXT, status TEXT, fee REAL);
CREATE TABLE prescriptions (prescription_id INTEGER PRIMARY KEY,
    appointment_id INTEGER REFERENCES appointments(appointment_id), medication TEXT, dosage_mg INTEGER,
    days INTEGER);
"""
SPECIALTIES = {"General Practice": 60, "Cardiology": 180, "Dermatology": 120, "Pediatrics": 80,
               "Orthopedics": 150, "Neurology": 200}
MEDICATIONS = {"Amoxicillin": 500, "Ibuprofen": 400, "Lisinopril": 10, "Metformin": 850, "Atorvastatin": 20,
               "Omeprazole": 20, "Cetirizine": 10, "Prednisone": 5, "Sertraline": 50, "Paracetamol": 500}


def build_clinic(conn: sqlite3.Connection, rng: random.Random) -> None:
    create(conn, CLINIC_DDL)
    doctors = [(i, f"Dr. {n}", rng.choice(list(SPECIALTIES)), iso(rand_date(rng, date(2008, 1, 1), date(2023, 12, 31))))
               for i, n in enumerate(people(rng, 28), 1)]
    insert(conn, "doctors", doctors)
    cities = [c for c, _ in CITIES[:12]]
    patients = [(i, n, iso(rand_date(rng, date(1940, 1, 1), date(2020, 12, 31))), rng.choice(["F", "M"]),
                 rng.choice(cities)) for i, n in enumerate(people(rng, 800), 1)]
    insert(conn, "patients", patients)
    appts, rx = [], []
    pat_w, doc_w = skewed(rng, len(patients)), skewed(rng, len(doctors))
    for aid in range(1, 3001):
        doc = rng.choices(doctors, doc_w)[0]
        status = rng.choices(["completed", "cancelled", "no-show"], [85, 10, 5])[0]
        fee = round(SPECIALTIES[doc[2]] * rng.uniform(0.9, 1.4), 2)
        appts.append((aid, rng.choices(patients, pat_w)[0][0], doc[0], iso(rand_date(rng)), status, fee))
        if status == "completed":
            for med in rng.sample(list(MEDICATIONS), rng.choices([0, 1, 2], [5, 4, 1])[0]):
                rx.append((len(rx) + 1, aid, med, MEDICATIONS[med] * rng.choice([1, 1, 2]),
                           rng.choice([5, 7, 10, 14, 30, 90])))
    insert(conn, "appointments", appts)
    insert(conn, "prescriptions", rx)


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class Database:
    db_id: str
    build: Callable[[sqlite3.Connection, random.Random], None]
    macros: tuple[dict, ...]
    compact_ddl: bool = True  # False: the DDL keeps its lines and comments (the warehouse)


DATABASES = (
    Database("sales", build_sales, (FISCAL_QUARTER, NET_REVENUE)),
    Database("hotels", build_hotels, (NIGHTS, SEASON)),
    Database("hr", build_hr, (BUSINESS_DAYS, SALARY_BAND)),
    Database("logistics", build_logistics, (BUSINESS_DAYS, DISTANCE_BAND)),
    Database("finance", build_finance, (FISCAL_QUARTER, NET_AMOUNT)),
    # Held out: seen only in eval. Their macros mix one shared with training DBs and one new one.
    Database("support", build_support, (BUSINESS_DAYS, SLA_DAYS)),
    Database("clinic", build_clinic, (FISCAL_QUARTER, AGE_YEARS)),
    # 170+ tables, DDL over 20,000 tokens: questions need schema linking (ft/data/linking.py). Trains and evaluates.
    Database("warehouse", build_warehouse, (FISCAL_QUARTER, BUSINESS_DAYS, NET_AMOUNT), compact_ddl=False),
)
HELDOUT_DBS = ("support", "clinic")
