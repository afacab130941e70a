"""Question templates per bundled database (the mini-language is described in questions.py).

SQL style, kept the same everywhere so a small model can learn it:
  - uppercase keywords, one line, no trailing semicolon, string literals in single quotes;
  - single-table queries use bare column names; joins alias every table (`orders AS o`) and qualify columns;
  - grouped aggregates get snake_case aliases (`COUNT(*) AS order_count`), a lone scalar answer gets none;
  - money is `ROUND(..., 2)`; shares are `ROUND(100.0 * part / (SELECT total ...), 2)`;
  - years `strftime('%Y', d) = '2023'`, months `strftime('%Y-%m', d) = '2023-03'`, ranges `BETWEEN`;
  - top-k queries put the ranking value in the last column.
"""
from __future__ import annotations

from .questions import YEARS, K, P, T, date_range, day, month, quarter
from .warehouse import TEMPLATES as WAREHOUSE_TEMPLATES

DIRECTION = (P("most expensive", "DESC"), P("cheapest", "ASC"))

# --------------------------------------------------------------------------------------------- sales
# Revenue (gross) is quantity * unit_price; "net revenue" (after discount) is the net_revenue macro.

SALES_REV = "oi.quantity * oi.unit_price"
SALES = [
    # simple
    T("simple", ["List the names of customers located in {city}.", "Which customers are based in {city}?",
                 "Show all customers from {city}."],
      "SELECT name FROM customers WHERE city = '{city}'", city="SELECT DISTINCT city FROM customers"),
    T("simple", ["How many {segment} customers are there in {country}?",
                 "What is the number of customers in the {segment} segment from {country}?",
                 "Count the {segment} customers located in {country}."],
      "SELECT COUNT(*) FROM customers WHERE segment = '{segment}' AND country = '{country}'",
      pair="SELECT DISTINCT segment, country FROM customers"),
    T("simple", ["Which products cost more than {price} and have fewer than {stock} units in stock?",
                 "List products priced above {price} with stock below {stock}.",
                 "Show the name, price and stock of products that cost over {price} but have less than {stock} units left."],
      "SELECT name, unit_price, stock FROM products WHERE unit_price > {price} AND stock < {stock}",
      price=(20, 50, 100, 200, 400), stock=(10, 25, 50, 100)),
    T("simple", ["How many {status} orders came through the {channel} channel?",
                 "What is the number of orders placed via {channel} that are {status}?",
                 "Count the {channel} orders with status '{status}'."],
      "SELECT COUNT(*) FROM orders WHERE channel = '{channel}' AND status = '{status}'",
      channel="SELECT DISTINCT channel FROM orders", status="SELECT DISTINCT status FROM orders"),
    T("simple", ["How many order lines have a quantity of at least {qty} and a discount of at least {disc}?",
                 "Count the order items with {qty} or more units and a discount of {disc} or more.",
                 "What is the number of order items with quantity >= {qty} discounted by at least {disc}?"],
      "SELECT COUNT(*) FROM order_items WHERE quantity >= {qty} AND discount >= {disc}",
      qty=(2, 3, 5, 10), disc=(P("5%", "0.05"), P("10%", "0.1"), P("15%", "0.15"), P("20%", "0.2"))),
    # aggregate
    T("aggregate", ["For each country, how many {segment} customers are there?",
                    "Count the {segment} customers per country.",
                    "Show the number of customers in the {segment} segment by country."],
      "SELECT country, COUNT(*) AS customer_count FROM customers WHERE segment = '{segment}' GROUP BY country",
      segment="SELECT DISTINCT segment FROM customers"),
    T("aggregate", ["Which cities have more than {n} customers?", "List the cities with over {n} customers.",
                    "Show cities that have more than {n} customers, with their customer counts."],
      "SELECT city, COUNT(*) AS customer_count FROM customers GROUP BY city HAVING COUNT(*) > {n}",
      n=(5, 10, 15, 20, 25, 30, 40)),
    T("aggregate", ["How many orders were placed per {dim} in {year}?", "Count the orders by {dim} for {year}.",
                    "What is the number of orders for each {dim} in {year}?"],
      "SELECT {dim}, COUNT(*) AS order_count FROM orders WHERE strftime('%Y', order_date) = '{year}' GROUP BY {dim}",
      dim=("channel", "status"), year=YEARS),
    T("aggregate", ["How many distinct customers ordered through the {channel} channel in {year}?",
                    "Count the different customers who placed {channel} orders in {year}.",
                    "What is the number of unique customers with a {channel} order in {year}?"],
      "SELECT COUNT(DISTINCT customer_id) FROM orders WHERE channel = '{channel}' AND strftime('%Y', order_date) = '{year}'",
      channel="SELECT DISTINCT channel FROM orders", year=YEARS),
    T("aggregate", ["Which customers have placed more than {n} orders?", "List customers with over {n} orders.",
                    "Show the customers who ordered more than {n} times, with their order counts."],
      "SELECT c.name, COUNT(*) AS order_count FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
      "GROUP BY c.name HAVING COUNT(*) > {n}", n=(10, 12, 15, 20, 25, 30, 40)),
    T("aggregate", ["What is the average unit price of products in each category?",
                    "Show the average product price per category.",
                    "For each category, what is the mean price of its products?"],
      "SELECT cat.name, ROUND(AVG(p.unit_price), 2) AS avg_price FROM products AS p JOIN categories AS cat "
      "ON p.category_id = cat.category_id GROUP BY cat.name", target=1),
    T("aggregate", ["Which categories have an average product price above {price}?",
                    "List categories whose products cost more than {price} on average.",
                    "Show the categories with a mean product price over {price}."],
      "SELECT cat.name, ROUND(AVG(p.unit_price), 2) AS avg_price FROM products AS p JOIN categories AS cat "
      "ON p.category_id = cat.category_id GROUP BY cat.name HAVING AVG(p.unit_price) > {price}",
      price=(20, 50, 100, 150, 200, 300)),
    T("aggregate", ["How many units were sold per category in the {department} department?",
                    "Show the quantity sold for each {department} category.",
                    "For the {department} department, count the units sold by category."],
      "SELECT cat.name, SUM(oi.quantity) AS units_sold FROM order_items AS oi JOIN products AS p "
      "ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE cat.department = '{department}' GROUP BY cat.name",
      department="SELECT DISTINCT department FROM categories"),
    # topk
    T("topk", ["What are the {k} {dir} products?", "List the top {k} {dir} products and their prices.",
               "Show the {k} {dir} products."],
      "SELECT name, unit_price FROM products ORDER BY unit_price {dir} LIMIT {k}", k=K, dir=DIRECTION),
    T("topk", ["Which {k} products in the {category} category are the {dir}?",
               "List the {k} {dir} {category} products.", "Show the top {k} {dir} items in {category}."],
      "SELECT p.name, p.unit_price FROM products AS p JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE cat.name = '{category}' ORDER BY p.unit_price {dir} LIMIT {k}",
      k=K, dir=DIRECTION, category="SELECT name FROM categories"),
    T("topk", ["Which {k} cities have the most {segment} customers?",
               "List the top {k} cities by number of {segment} customers.",
               "What are the {k} cities with the highest count of {segment} customers?"],
      "SELECT city, COUNT(*) AS customer_count FROM customers WHERE segment = '{segment}' GROUP BY city "
      "ORDER BY customer_count DESC LIMIT {k}", k=K, segment="SELECT DISTINCT segment FROM customers"),
    T("topk", ["Who were the top {k} customers by total spending in {year}?",
               "Which {k} customers spent the most in {year}?",
               "List the {k} customers with the highest order value in {year}."],
      f"SELECT c.name, ROUND(SUM({SALES_REV}), 2) AS total_spent FROM customers AS c JOIN orders AS o "
      "ON c.customer_id = o.customer_id JOIN order_items AS oi ON o.order_id = oi.order_id "
      "WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY c.name ORDER BY total_spent DESC LIMIT {k}",
      k=K, year=YEARS),
    T("topk", ["Which {k} products sold the most units in {year}?",
               "List the top {k} best-selling products by quantity in {year}.",
               "What were the {k} products with the highest number of units sold in {year}?"],
      "SELECT p.name, SUM(oi.quantity) AS units_sold FROM products AS p JOIN order_items AS oi "
      "ON p.product_id = oi.product_id JOIN orders AS o ON oi.order_id = o.order_id "
      "WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY p.name ORDER BY units_sold DESC LIMIT {k}",
      k=K, year=YEARS),
    T("topk", ["Which customer from {country} placed the most orders?",
               "Who is the customer in {country} with the highest number of orders?",
               "Find the {country} customer with the most orders."],
      "SELECT c.name, COUNT(*) AS order_count FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
      "WHERE c.country = '{country}' GROUP BY c.name ORDER BY order_count DESC LIMIT 1",
      country="SELECT DISTINCT country FROM customers"),
    # join
    T("join", ["List the {category} products that cost less than {price}.",
               "Which products in the {category} category are priced under {price}?",
               "Show {category} products with a unit price below {price}."],
      "SELECT p.name, p.unit_price FROM products AS p JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE cat.name = '{category}' AND p.unit_price < {price}",
      category="SELECT name FROM categories", price=(20, 50, 100, 250)),
    T("join", ["Which customers from {city} placed an order in {month}?",
               "List the customers in {city} who ordered in {month}.",
               "Show the names of {city} customers with orders in {month}."],
      "SELECT DISTINCT c.name FROM customers AS c JOIN orders AS o ON c.customer_id = o.customer_id "
      "WHERE c.city = '{city}' AND strftime('%Y-%m', o.order_date) = '{ym}'",
      city="SELECT DISTINCT city FROM customers", m=month),
    T("join", ["How many units of {product} were sold to customers in {country}?",
               "What is the total quantity of {product} bought by customers from {country}?",
               "Count the units of {product} ordered by {country} customers."],
      "SELECT SUM(oi.quantity) FROM order_items AS oi JOIN products AS p ON oi.product_id = p.product_id "
      "JOIN orders AS o ON oi.order_id = o.order_id JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE p.name = '{product}' AND c.country = '{country}'",
      product="SELECT name FROM products", country="SELECT DISTINCT country FROM customers"),
    T("join", ["What was the total revenue from {category} products sold to {segment} customers in {year}?",
               "How much revenue did {segment} customers generate on {category} products in {year}?",
               "Compute the {year} sales of the {category} category to customers in the {segment} segment."],
      f"SELECT ROUND(SUM({SALES_REV}), 2) FROM order_items AS oi JOIN products AS p ON oi.product_id = p.product_id "
      "JOIN categories AS cat ON p.category_id = cat.category_id JOIN orders AS o ON oi.order_id = o.order_id "
      "JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE cat.name = '{category}' AND c.segment = '{segment}' AND strftime('%Y', o.order_date) = '{year}'",
      category="SELECT name FROM categories", segment="SELECT DISTINCT segment FROM customers", year=YEARS),
    T("join", ["List the orders placed by {customer} with their dates and statuses.",
               "Show the order id, date and status of every order from {customer}.",
               "What orders has {customer} placed?"],
      "SELECT o.order_id, o.order_date, o.status FROM orders AS o JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE c.name = '{customer}'", customer="SELECT name FROM customers"),
    T("join", ["Which products has {customer} bought?", "List the distinct products ordered by {customer}.",
               "Show every product that {customer} has purchased."],
      "SELECT DISTINCT p.name FROM products AS p JOIN order_items AS oi ON p.product_id = oi.product_id "
      "JOIN orders AS o ON oi.order_id = o.order_id JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE c.name = '{customer}'", customer="SELECT name FROM customers"),
    T("join", ["How many units were sold in each category in {year}?",
               "Show the total quantity sold per category for {year}.",
               "For {year}, what is the number of units sold by category?"],
      "SELECT cat.name, SUM(oi.quantity) AS units_sold FROM order_items AS oi JOIN products AS p "
      "ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "JOIN orders AS o ON oi.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY cat.name",
      year=YEARS),
    # nested
    T("nested", ["Which products have never been ordered?", "List the products that appear in no order.",
                 "Show products with no sales at all."],
      "SELECT name FROM products WHERE product_id NOT IN (SELECT product_id FROM order_items)", target=1),
    T("nested", ["Which {category} products were not ordered at all in {year}?",
                 "List the products in {category} with no orders in {year}.",
                 "Show {category} products that nobody bought in {year}."],
      "SELECT p.name FROM products AS p JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE cat.name = '{category}' AND p.product_id NOT IN (SELECT oi.product_id FROM order_items AS oi "
      "JOIN orders AS o ON oi.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}')",
      category="SELECT name FROM categories", year=YEARS),
    T("nested", ["Which products are more expensive than the average {category} product?",
                 "List products priced above the average price of the {category} category.",
                 "Show the products that cost more than {category} products do on average."],
      "SELECT name, unit_price FROM products WHERE unit_price > (SELECT AVG(p.unit_price) FROM products AS p "
      "JOIN categories AS cat ON p.category_id = cat.category_id WHERE cat.name = '{category}')",
      category="SELECT name FROM categories"),
    T("nested", ["Which customers spent more than {amount} in {year}?",
                 "List customers whose total order value in {year} exceeded {amount}.",
                 "Show the customers with over {amount} in purchases during {year}, and how much they spent."],
      f"WITH spend AS (SELECT o.customer_id, SUM({SALES_REV}) AS total FROM orders AS o JOIN order_items AS oi "
      "ON o.order_id = oi.order_id WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY o.customer_id) "
      "SELECT c.name, ROUND(s.total, 2) AS total_spent FROM customers AS c JOIN spend AS s "
      "ON c.customer_id = s.customer_id WHERE s.total > {amount}",
      amount=(2000, 3000, 5000, 8000, 10000), year=YEARS),
    T("nested", ["How many customers have placed more than {n} orders?",
                 "Count the customers with over {n} orders.",
                 "What is the number of customers who ordered more than {n} times?"],
      "SELECT COUNT(*) FROM (SELECT customer_id FROM orders GROUP BY customer_id HAVING COUNT(*) > {n})",
      n=(2, 3, 5, 8, 10, 15, 20)),
    T("nested", ["Which customers in {city} have never ordered through the {channel} channel?",
                 "List {city} customers without any {channel} order.",
                 "Show customers from {city} who never placed a {channel} order."],
      "SELECT name FROM customers WHERE city = '{city}' AND customer_id NOT IN "
      "(SELECT customer_id FROM orders WHERE channel = '{channel}')",
      city="SELECT DISTINCT city FROM customers", channel="SELECT DISTINCT channel FROM orders"),
    T("nested", ["What is the average number of orders per customer in {year}?",
                 "On average, how many orders did each ordering customer place in {year}?",
                 "Compute the mean order count per customer for {year}."],
      "SELECT ROUND(AVG(order_count), 2) FROM (SELECT customer_id, COUNT(*) AS order_count FROM orders "
      "WHERE strftime('%Y', order_date) = '{year}' GROUP BY customer_id)", year=YEARS),
    # date
    T("date", ["How many orders were placed in {month}?", "What is the number of orders from {month}?",
               "Count the orders made in {month}."],
      "SELECT COUNT(*) FROM orders WHERE strftime('%Y-%m', order_date) = '{ym}'", m=month),
    T("date", ["How many {status} orders were there in each month of {year}?",
               "Show the monthly count of {status} orders in {year}.",
               "For every month of {year}, count the orders with status '{status}'."],
      "SELECT strftime('%Y-%m', order_date) AS month, COUNT(*) AS order_count FROM orders "
      "WHERE strftime('%Y', order_date) = '{year}' AND status = '{status}' GROUP BY month ORDER BY month",
      status="SELECT DISTINCT status FROM orders", year=YEARS),
    T("date", ["What was the revenue in each quarter of {year} for {channel} orders?",
               "Show quarterly revenue of the {channel} channel in {year}.",
               "Break down {year} revenue from {channel} orders by quarter."],
      f"SELECT (CAST(strftime('%m', o.order_date) AS INTEGER) + 2) / 3 AS quarter, ROUND(SUM({SALES_REV}), 2) AS revenue "
      "FROM orders AS o JOIN order_items AS oi ON o.order_id = oi.order_id "
      "WHERE o.channel = '{channel}' AND strftime('%Y', o.order_date) = '{year}' GROUP BY quarter ORDER BY quarter",
      channel="SELECT DISTINCT channel FROM orders", year=YEARS),
    T("date", ["How many customers signed up between {start} and {end}?",
               "Count the customers whose signup date is from {start} to {end}.",
               "What is the number of new customers registered between {start} and {end}?"],
      "SELECT COUNT(*) FROM customers WHERE signup_date BETWEEN '{start}' AND '{end}'", r=date_range),
    T("date", ["Which month of {year} had the most orders?", "In {year}, which month saw the highest number of orders?",
               "Find the busiest month of {year} by order count."],
      "SELECT strftime('%Y-%m', order_date) AS month, COUNT(*) AS order_count FROM orders "
      "WHERE strftime('%Y', order_date) = '{year}' GROUP BY month ORDER BY order_count DESC LIMIT 1", year=YEARS),
    T("date", ["How many orders were placed on weekends in {quarter}?",
               "Count the Saturday and Sunday orders in {quarter}.",
               "What is the number of weekend orders during {quarter}?"],
      "SELECT COUNT(*) FROM orders WHERE strftime('%w', order_date) IN ('0', '6') "
      "AND order_date BETWEEN '{q_start}' AND '{q_end}'", q=quarter),
    T("date", ["Which customers signed up after {day} in {city}?",
               "List customers from {city} who registered after {day}.",
               "Show the {city} customers with a signup date later than {day}."],
      "SELECT name, signup_date FROM customers WHERE city = '{city}' AND signup_date > '{day}'",
      city="SELECT DISTINCT city FROM customers", day=day),
    # percent
    T("percent", ["What percentage of orders in {year} were {status}?",
                  "What share of {year} orders ended up {status}?",
                  "In {year}, what percent of orders have status '{status}'?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM orders WHERE strftime('%Y', order_date) = '{year}'), 2) "
      "FROM orders WHERE strftime('%Y', order_date) = '{year}' AND status = '{status}'",
      status="SELECT DISTINCT status FROM orders", year=YEARS),
    T("percent", ["Show total sales per category, with the percentage of total sales.",
                  "What are the sales of each category and their share of all sales?",
                  "For each category, give total sales and the percent of overall sales."],
      f"SELECT cat.name, ROUND(SUM({SALES_REV}), 2) AS total_sales, ROUND(100.0 * SUM({SALES_REV}) / "
      "(SELECT SUM(quantity * unit_price) FROM order_items), 2) AS pct_of_total FROM order_items AS oi "
      "JOIN products AS p ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "GROUP BY cat.name ORDER BY total_sales DESC", target=1),
    T("percent", ["What percentage of {year} revenue came from the {category} category?",
                  "What share of sales in {year} was {category}?",
                  "In {year}, what percent of total revenue did {category} products bring in?"],
      f"SELECT ROUND(100.0 * SUM({SALES_REV}) / (SELECT SUM({SALES_REV}) FROM order_items AS oi "
      "JOIN orders AS o ON oi.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}'), 2) "
      "FROM order_items AS oi JOIN orders AS o ON oi.order_id = o.order_id "
      "JOIN products AS p ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE strftime('%Y', o.order_date) = '{year}' AND cat.name = '{category}'",
      category="SELECT name FROM categories", year=YEARS),
    T("percent", ["What share of customers does each {dim} account for?",
                  "Show the number of customers per {dim} and their percentage of all customers.",
                  "For every {dim}, what percent of customers belong to it?"],
      "SELECT {dim}, COUNT(*) AS customer_count, ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM customers), 2) "
      "AS pct_of_total FROM customers GROUP BY {dim}", dim=("segment", "country", "city")),
    T("percent", ["What percentage of customers in {country} are in the {segment} segment?",
                  "What share of {country} customers are {segment}?",
                  "Among customers from {country}, what percent are {segment} customers?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM customers WHERE country = '{country}'), 2) "
      "FROM customers WHERE country = '{country}' AND segment = '{segment}'",
      pair="SELECT DISTINCT segment, country FROM customers"),
    T("percent", ["What percentage of order lines for {category} products had a discount?",
                  "What share of {category} order items were discounted?",
                  "Among order items in {category}, what percent carry a discount?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN oi.discount > 0 THEN 1 ELSE 0 END) / COUNT(*), 2) FROM order_items AS oi "
      "JOIN products AS p ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE cat.name = '{category}'", category="SELECT name FROM categories"),
    # macro
    T("macro", ["What was the net revenue in fiscal quarter {fq}?",
                "How much net revenue (after discounts) did we make in {fq}?",
                "Compute the net revenue for {fq}."],
      "SELECT ROUND(SUM(net_revenue(oi.quantity, oi.unit_price, oi.discount)), 2) FROM order_items AS oi "
      "JOIN orders AS o ON oi.order_id = o.order_id WHERE fiscal_quarter(o.order_date) = '{fq}'",
      fq="SELECT DISTINCT fiscal_quarter(order_date) FROM orders"),
    T("macro", ["How many {status} orders were there in each fiscal quarter of FY{fy}?",
                "Count the {status} orders per fiscal quarter in fiscal year {fy}.",
                "Show the number of orders with status '{status}' by fiscal quarter for FY{fy}."],
      "SELECT fiscal_quarter(order_date) AS quarter, COUNT(*) AS order_count FROM orders "
      "WHERE fiscal_quarter(order_date) LIKE 'FY{fy}-%' AND status = '{status}' GROUP BY quarter ORDER BY quarter",
      status="SELECT DISTINCT status FROM orders", fy=("2021", "2022", "2023", "2024")),
    T("macro", ["What was the net revenue of each category in {fq}?",
                "Show net revenue after discounts per category for fiscal quarter {fq}.",
                "Break down {fq} net revenue by category."],
      "SELECT cat.name, ROUND(SUM(net_revenue(oi.quantity, oi.unit_price, oi.discount)), 2) AS net_revenue "
      "FROM order_items AS oi JOIN orders AS o ON oi.order_id = o.order_id JOIN products AS p "
      "ON oi.product_id = p.product_id JOIN categories AS cat ON p.category_id = cat.category_id "
      "WHERE fiscal_quarter(o.order_date) = '{fq}' GROUP BY cat.name ORDER BY net_revenue DESC",
      fq="SELECT DISTINCT fiscal_quarter(order_date) FROM orders"),
    T("macro", ["Which {k} products generated the most net revenue in {year}?",
                "List the top {k} products by net revenue (after discounts) in {year}.",
                "What were the {k} highest net-revenue products of {year}?"],
      "SELECT p.name, ROUND(SUM(net_revenue(oi.quantity, oi.unit_price, oi.discount)), 2) AS net_revenue "
      "FROM products AS p JOIN order_items AS oi ON p.product_id = oi.product_id JOIN orders AS o "
      "ON oi.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}' GROUP BY p.name "
      "ORDER BY net_revenue DESC LIMIT {k}", k=K, year=YEARS),
    T("macro", ["What is the net revenue of order {order_id}?", "How much is order {order_id} worth after discounts?",
                "Compute the net value of order number {order_id}."],
      "SELECT ROUND(SUM(net_revenue(quantity, unit_price, discount)), 2) FROM order_items WHERE order_id = {order_id}",
      order_id="SELECT order_id FROM orders"),
    T("macro", ["What net revenue came from {segment} customers in fiscal year {fy}?",
                "How much net revenue did the {segment} segment generate in FY{fy}?",
                "Compute FY{fy} net revenue from {segment} customers."],
      "SELECT ROUND(SUM(net_revenue(oi.quantity, oi.unit_price, oi.discount)), 2) FROM order_items AS oi "
      "JOIN orders AS o ON oi.order_id = o.order_id JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE c.segment = '{segment}' AND fiscal_quarter(o.order_date) LIKE 'FY{fy}-%'",
      segment="SELECT DISTINCT segment FROM customers", fy=("2021", "2022", "2023", "2024")),
    T("macro", ["How many orders did {country} customers place in fiscal quarter {fq}?",
                "Count the orders from customers in {country} during {fq}.",
                "What is the number of {fq} orders placed by customers from {country}?"],
      "SELECT COUNT(*) FROM orders AS o JOIN customers AS c ON o.customer_id = c.customer_id "
      "WHERE c.country = '{country}' AND fiscal_quarter(o.order_date) = '{fq}'",
      country="SELECT DISTINCT country FROM customers", fq="SELECT DISTINCT fiscal_quarter(order_date) FROM orders"),
]


# -------------------------------------------------------------------------------------------- hotels
# Room revenue of a stay is nights(check_in, check_out) * nightly_rate; service revenue is quantity * price.

HOTEL = "SELECT name FROM hotels"
TIER = "SELECT DISTINCT loyalty_tier FROM guests WHERE loyalty_tier <> 'none'"
HOTEL_JOIN = "JOIN rooms AS r ON b.room_id = r.room_id JOIN hotels AS h ON r.hotel_id = h.hotel_id"
HOTELS = [
    # simple
    T("simple", ["List the {stars}-star hotels.", "Which hotels have {stars} stars?",
                 "Show the name and city of every {stars}-star hotel."],
      "SELECT name, city FROM hotels WHERE stars = {stars}", stars=(3, 4, 5)),
    T("simple", ["How many {room_type} rooms cost more than {rate} per night?",
                 "Count the {room_type} rooms with a nightly rate above {rate}.",
                 "What is the number of {room_type} rooms priced over {rate} a night?"],
      "SELECT COUNT(*) FROM rooms WHERE room_type = '{room_type}' AND nightly_rate > {rate}",
      room_type="SELECT DISTINCT room_type FROM rooms", rate=(80, 120, 150, 200, 300, 400)),
    T("simple", ["How many guests from {country} have {tier} loyalty status?",
                 "Count the {tier}-tier guests from {country}.",
                 "What is the number of guests in {country} whose loyalty tier is {tier}?"],
      "SELECT COUNT(*) FROM guests WHERE country = '{country}' AND loyalty_tier = '{tier}'",
      pair="SELECT DISTINCT country, loyalty_tier AS tier FROM guests WHERE loyalty_tier <> 'none'"),
    T("simple", ["Which guests from {country} are {tier} members?", "List the {tier} loyalty guests from {country}.",
                 "Show the names of guests from {country} with {tier} status."],
      "SELECT name FROM guests WHERE country = '{country}' AND loyalty_tier = '{tier}'",
      pair="SELECT DISTINCT country, loyalty_tier AS tier FROM guests WHERE loyalty_tier <> 'none'"),
    T("simple", ["Which services cost less than {price}?", "List services priced under {price}.",
                 "Show the services and prices of those cheaper than {price}."],
      "SELECT name, price FROM services WHERE price < {price}", price=(15, 20, 30, 50, 100)),
    # aggregate
    T("aggregate", ["How many rooms of each type does {hotel} have?", "Count the rooms per room type at {hotel}.",
                    "Show the number of rooms by type in {hotel}."],
      "SELECT r.room_type, COUNT(*) AS room_count FROM rooms AS r JOIN hotels AS h ON r.hotel_id = h.hotel_id "
      "WHERE h.name = '{hotel}' GROUP BY r.room_type", hotel=HOTEL),
    T("aggregate", ["What is the average nightly rate of each room type in {stars}-star hotels?",
                    "Show the mean nightly rate per room type for {stars}-star hotels.",
                    "For {stars}-star hotels, what does each room type cost per night on average?"],
      "SELECT r.room_type, ROUND(AVG(r.nightly_rate), 2) AS avg_rate FROM rooms AS r JOIN hotels AS h "
      "ON r.hotel_id = h.hotel_id WHERE h.stars = {stars} GROUP BY r.room_type", stars=(3, 4, 5)),
    T("aggregate", ["How many bookings with check-in in {year} are there per status?",
                    "Count the {year} bookings by status.", "Show the number of bookings for each status in {year}."],
      "SELECT status, COUNT(*) AS booking_count FROM bookings WHERE strftime('%Y', check_in) = '{year}' GROUP BY status",
      year=YEARS),
    T("aggregate", ["Which countries have more than {n} guests?", "List the countries with over {n} guests.",
                    "Show countries with more than {n} registered guests and their guest counts."],
      "SELECT country, COUNT(*) AS guest_count FROM guests GROUP BY country HAVING COUNT(*) > {n}",
      n=(10, 20, 30, 40, 50, 60)),
    T("aggregate", ["How many guests from {country} are in each loyalty tier?",
                    "Count the guests from {country} per loyalty tier.",
                    "Show the loyalty tier breakdown of guests from {country}."],
      "SELECT loyalty_tier, COUNT(*) AS guest_count FROM guests WHERE country = '{country}' GROUP BY loyalty_tier",
      country="SELECT DISTINCT country FROM guests"),
    T("aggregate", ["Which guests have made more than {n} bookings?", "List guests with over {n} bookings.",
                    "Show the guests who booked more than {n} times, with their booking counts."],
      "SELECT g.name, COUNT(*) AS booking_count FROM guests AS g JOIN bookings AS b ON g.guest_id = b.guest_id "
      "GROUP BY g.name HAVING COUNT(*) > {n}", n=(8, 10, 12, 15, 20)),
    # topk
    T("topk", ["What are the {k} {dir} rooms at {hotel}?", "List the {k} {dir} rooms in {hotel} with their rates.",
               "Show the top {k} {dir} rooms of {hotel}."],
      "SELECT r.room_number, r.nightly_rate FROM rooms AS r JOIN hotels AS h ON r.hotel_id = h.hotel_id "
      "WHERE h.name = '{hotel}' ORDER BY r.nightly_rate {dir} LIMIT {k}", k=K, dir=DIRECTION, hotel=HOTEL),
    T("topk", ["Which {k} hotels had the most bookings in {year}?", "List the top {k} hotels by number of {year} bookings.",
               "What are the {k} busiest hotels by bookings in {year}?"],
      f"SELECT h.name, COUNT(*) AS booking_count FROM bookings AS b {HOTEL_JOIN} "
      "WHERE strftime('%Y', b.check_in) = '{year}' GROUP BY h.name ORDER BY booking_count DESC LIMIT {k}",
      k=K, year=YEARS),
    T("topk", ["Which {k} services were used the most in {year}?",
               "List the top {k} services by quantity used in {year}.",
               "What were the {k} most popular services in {year}?"],
      "SELECT s.name, SUM(su.quantity) AS times_used FROM services AS s JOIN service_usage AS su "
      "ON s.service_id = su.service_id WHERE strftime('%Y', su.usage_date) = '{year}' GROUP BY s.name "
      "ORDER BY times_used DESC LIMIT {k}", k=K, year=YEARS),
    T("topk", ["Which {k} countries do most of our {tier} guests come from?",
               "List the top {k} countries by number of {tier} guests.",
               "What are the {k} countries with the most guests at loyalty tier {tier}?"],
      "SELECT country, COUNT(*) AS guest_count FROM guests WHERE loyalty_tier = '{tier}' GROUP BY country "
      "ORDER BY guest_count DESC LIMIT {k}", k=K, tier=TIER),
    T("topk", ["Which {k} guests spent the most on services in {year}?",
               "List the top {k} guests by total service spending in {year}.",
               "Who are the {k} guests with the highest spending on hotel services in {year}?"],
      "SELECT g.name, ROUND(SUM(su.quantity * s.price), 2) AS service_spend FROM guests AS g JOIN bookings AS b "
      "ON g.guest_id = b.guest_id JOIN service_usage AS su ON b.booking_id = su.booking_id JOIN services AS s "
      "ON su.service_id = s.service_id WHERE strftime('%Y', su.usage_date) = '{year}' GROUP BY g.name "
      "ORDER BY service_spend DESC LIMIT {k}", k=K, year=YEARS),
    # join
    T("join", ["Which guests checked in at {hotel} in {month}?", "List the guests who stayed at {hotel} in {month}.",
               "Show the names of guests with a {month} check-in at {hotel}."],
      f"SELECT DISTINCT g.name FROM guests AS g JOIN bookings AS b ON g.guest_id = b.guest_id {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' AND strftime('%Y-%m', b.check_in) = '{ym}'", hotel=HOTEL, m=month),
    T("join", ["Which services did {guest} use?", "List the services used by {guest}.",
               "Show every service that {guest} has used during their stays."],
      "SELECT DISTINCT s.name FROM services AS s JOIN service_usage AS su ON s.service_id = su.service_id "
      "JOIN bookings AS b ON su.booking_id = b.booking_id JOIN guests AS g ON b.guest_id = g.guest_id "
      "WHERE g.name = '{guest}'", guest="SELECT name FROM guests"),
    T("join", ["How many bookings did {hotel} receive in {year}?", "Count the {year} bookings at {hotel}.",
               "What is the number of bookings at {hotel} with check-in in {year}?"],
      f"SELECT COUNT(*) FROM bookings AS b {HOTEL_JOIN} WHERE h.name = '{{hotel}}' "
      "AND strftime('%Y', b.check_in) = '{year}'", hotel=HOTEL, year=YEARS),
    T("join", ["What was the total service revenue at {hotel} in {year}?",
               "How much did {hotel} earn from services in {year}?",
               "Compute {hotel}'s {year} revenue from guest services."],
      "SELECT ROUND(SUM(su.quantity * s.price), 2) FROM service_usage AS su JOIN services AS s "
      f"ON su.service_id = s.service_id JOIN bookings AS b ON su.booking_id = b.booking_id {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' AND strftime('%Y', su.usage_date) = '{year}'", hotel=HOTEL, year=YEARS),
    T("join", ["Show the bookings of {guest} with hotel name and check-in date.",
               "List {guest}'s bookings: hotel, check-in and status.",
               "Where and when has {guest} booked a stay?"],
      f"SELECT h.name, b.check_in, b.status FROM bookings AS b {HOTEL_JOIN} JOIN guests AS g "
      "ON b.guest_id = g.guest_id WHERE g.name = '{guest}'", guest="SELECT name FROM guests"),
    T("join", ["How many {room_type} rooms were booked by {tier} guests in {year}?",
               "Count the {year} bookings of {room_type} rooms made by {tier}-tier guests.",
               "What is the number of {room_type} room bookings by {tier} members in {year}?"],
      "SELECT COUNT(*) FROM bookings AS b JOIN rooms AS r ON b.room_id = r.room_id JOIN guests AS g "
      "ON b.guest_id = g.guest_id WHERE r.room_type = '{room_type}' AND g.loyalty_tier = '{tier}' "
      "AND strftime('%Y', b.check_in) = '{year}'",
      room_type="SELECT DISTINCT room_type FROM rooms", tier=TIER, year=YEARS),
    # nested
    T("nested", ["Which guests from {country} have never cancelled a booking?",
                 "List guests from {country} with no cancelled bookings.",
                 "Show the {country} guests who never cancelled."],
      "SELECT name FROM guests WHERE country = '{country}' AND guest_id NOT IN "
      "(SELECT guest_id FROM bookings WHERE status = 'cancelled')", country="SELECT DISTINCT country FROM guests"),
    T("nested", ["Which rooms at {hotel} cost more than the hotel's average nightly rate?",
                 "List the rooms in {hotel} priced above that hotel's average rate.",
                 "Show {hotel} rooms whose nightly rate beats the hotel average."],
      "SELECT r.room_number, r.nightly_rate FROM rooms AS r JOIN hotels AS h ON r.hotel_id = h.hotel_id "
      "WHERE h.name = '{hotel}' AND r.nightly_rate > (SELECT AVG(nightly_rate) FROM rooms WHERE hotel_id = h.hotel_id)",
      hotel=HOTEL),
    T("nested", ["Which services has {guest} never used?", "List the services that {guest} has not used yet.",
                 "Show services never used by {guest}."],
      "SELECT name FROM services WHERE service_id NOT IN (SELECT su.service_id FROM service_usage AS su "
      "JOIN bookings AS b ON su.booking_id = b.booking_id JOIN guests AS g ON b.guest_id = g.guest_id "
      "WHERE g.name = '{guest}')",
      guest="SELECT DISTINCT g.name FROM guests AS g JOIN bookings AS b ON g.guest_id = b.guest_id "
      "JOIN service_usage AS su ON b.booking_id = su.booking_id"),
    T("nested", ["How many guests have made more than {n} bookings?", "Count the guests with over {n} bookings.",
                 "What is the number of guests who booked more than {n} times?"],
      "SELECT COUNT(*) FROM (SELECT guest_id FROM bookings GROUP BY guest_id HAVING COUNT(*) > {n})",
      n=(1, 2, 3, 5, 8, 10)),
    T("nested", ["Which hotels earned more than {amount} from services in {year}?",
                 "List hotels whose {year} service revenue exceeded {amount}.",
                 "Show the hotels with over {amount} in service revenue during {year}."],
      "WITH revenue AS (SELECT r.hotel_id, SUM(su.quantity * s.price) AS total FROM service_usage AS su "
      "JOIN services AS s ON su.service_id = s.service_id JOIN bookings AS b ON su.booking_id = b.booking_id "
      "JOIN rooms AS r ON b.room_id = r.room_id WHERE strftime('%Y', su.usage_date) = '{year}' GROUP BY r.hotel_id) "
      "SELECT h.name, ROUND(v.total, 2) AS service_revenue FROM hotels AS h JOIN revenue AS v "
      "ON h.hotel_id = v.hotel_id WHERE v.total > {amount}", amount=(1000, 2000, 3000, 5000, 8000), year=YEARS),
    T("nested", ["Which {tier} guests have never used any service?", "List {tier} members who never used a service.",
                 "Show guests at loyalty tier {tier} with no service usage."],
      "SELECT name FROM guests WHERE loyalty_tier = '{tier}' AND guest_id NOT IN (SELECT b.guest_id FROM bookings AS b "
      "JOIN service_usage AS su ON b.booking_id = su.booking_id)", tier=TIER),
    # date
    T("date", ["How many bookings checked in during {month}?", "Count the check-ins in {month}.",
               "What is the number of bookings with a check-in date in {month}?"],
      "SELECT COUNT(*) FROM bookings WHERE strftime('%Y-%m', check_in) = '{ym}'", m=month),
    T("date", ["How many bookings did {hotel} have in each month of {year}?",
               "Show the monthly booking count at {hotel} for {year}.",
               "For every month of {year}, count the check-ins at {hotel}."],
      f"SELECT strftime('%Y-%m', b.check_in) AS month, COUNT(*) AS booking_count FROM bookings AS b {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' AND strftime('%Y', b.check_in) = '{year}' GROUP BY month ORDER BY month",
      hotel=HOTEL, year=YEARS),
    T("date", ["How many bookings with check-in between {start} and {end} were {status}?",
               "Count the {status} bookings that checked in from {start} to {end}.",
               "What is the number of {status} bookings with check-in between {start} and {end}?"],
      "SELECT COUNT(*) FROM bookings WHERE status = '{status}' AND check_in BETWEEN '{start}' AND '{end}'",
      status="SELECT DISTINCT status FROM bookings", r=date_range),
    T("date", ["In which month of {year} did {hotel} have the most check-ins?",
               "What was the busiest month of {year} at {hotel}?",
               "Find the month of {year} with the highest number of bookings at {hotel}."],
      f"SELECT strftime('%Y-%m', b.check_in) AS month, COUNT(*) AS booking_count FROM bookings AS b {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' AND strftime('%Y', b.check_in) = '{year}' GROUP BY month "
      "ORDER BY booking_count DESC LIMIT 1", hotel=HOTEL, year=YEARS),
    T("date", ["How many times was {service} used in each quarter of {year}?",
               "Show quarterly usage of {service} in {year}.", "Break down {year} usage of {service} by quarter."],
      "SELECT (CAST(strftime('%m', su.usage_date) AS INTEGER) + 2) / 3 AS quarter, SUM(su.quantity) AS times_used "
      "FROM service_usage AS su JOIN services AS s ON su.service_id = s.service_id "
      "WHERE s.name = '{service}' AND strftime('%Y', su.usage_date) = '{year}' GROUP BY quarter ORDER BY quarter",
      service="SELECT name FROM services", year=YEARS),
    # percent
    T("percent", ["What percentage of bookings in {year} were {status}?",
                  "What share of {year} bookings ended up {status}?",
                  "In {year}, what percent of bookings have status '{status}'?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM bookings WHERE strftime('%Y', check_in) = '{year}'), 2) "
      "FROM bookings WHERE strftime('%Y', check_in) = '{year}' AND status = '{status}'",
      status="SELECT DISTINCT status FROM bookings", year=YEARS),
    T("percent", ["Show the number of bookings per room type and its share of all bookings.",
                  "What share of bookings does each room type account for?",
                  "For each room type, give the booking count and percentage of total bookings."],
      "SELECT r.room_type, COUNT(*) AS booking_count, ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM bookings), 2) "
      "AS pct_of_total FROM bookings AS b JOIN rooms AS r ON b.room_id = r.room_id GROUP BY r.room_type", target=1),
    T("percent", ["What percentage of guests from {country} are {tier} members?",
                  "What share of {country} guests have loyalty tier {tier}?",
                  "Among guests from {country}, what percent are at the {tier} tier?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM guests WHERE country = '{country}'), 2) "
      "FROM guests WHERE country = '{country}' AND loyalty_tier = '{tier}'",
      pair="SELECT DISTINCT country, loyalty_tier AS tier FROM guests WHERE loyalty_tier <> 'none'"),
    T("percent", ["What share of {year} service revenue came from {service}?",
                  "What percentage of service revenue in {year} did {service} bring in?",
                  "In {year}, what percent of all service revenue was from {service}?"],
      "SELECT ROUND(100.0 * SUM(su.quantity * s.price) / (SELECT SUM(su.quantity * s.price) FROM service_usage AS su "
      "JOIN services AS s ON su.service_id = s.service_id WHERE strftime('%Y', su.usage_date) = '{year}'), 2) "
      "FROM service_usage AS su JOIN services AS s ON su.service_id = s.service_id "
      "WHERE s.name = '{service}' AND strftime('%Y', su.usage_date) = '{year}'",
      service="SELECT name FROM services", year=YEARS),
    T("percent", ["What percentage of {hotel}'s bookings were {status}?",
                  "What share of bookings at {hotel} ended up {status}?",
                  "Among bookings at {hotel}, what percent have status '{status}'?"],
      f"SELECT ROUND(100.0 * SUM(CASE WHEN b.status = '{{status}}' THEN 1 ELSE 0 END) / COUNT(*), 2) "
      f"FROM bookings AS b {HOTEL_JOIN} WHERE h.name = '{{hotel}}'",
      hotel=HOTEL, status="SELECT DISTINCT status FROM bookings"),
    # macro
    T("macro", ["What is the average stay length in nights at {hotel}?",
                "On average, how many nights do guests stay at {hotel}?",
                "Compute the mean number of nights per booking at {hotel}."],
      f"SELECT ROUND(AVG(nights(b.check_in, b.check_out)), 2) FROM bookings AS b {HOTEL_JOIN} WHERE h.name = '{{hotel}}'",
      hotel=HOTEL),
    T("macro", ["How many {year} bookings checked in during the {season} season?",
                "Count the check-ins in {season} season in {year}.",
                "What is the number of {season}-season bookings in {year}?"],
      "SELECT COUNT(*) FROM bookings WHERE season(check_in) = '{season}' AND strftime('%Y', check_in) = '{year}'",
      season=("peak", "shoulder", "off"), year=YEARS),
    T("macro", ["What was the room revenue of completed stays at {hotel} in {year}?",
                "How much did {hotel} earn from rooms (nights times rate) for completed {year} stays?",
                "Compute {year} room revenue at {hotel} from completed bookings."],
      f"SELECT ROUND(SUM(nights(b.check_in, b.check_out) * r.nightly_rate), 2) FROM bookings AS b {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' AND b.status = 'completed' AND strftime('%Y', b.check_in) = '{year}'",
      hotel=HOTEL, year=YEARS),
    T("macro", ["Which {k} guests spent the most nights in completed stays in {year}?",
                "List the top {k} guests by nights stayed in {year} (completed bookings).",
                "Who were the {k} guests with the most nights at our hotels in {year}?"],
      "SELECT g.name, SUM(nights(b.check_in, b.check_out)) AS total_nights FROM guests AS g JOIN bookings AS b "
      "ON g.guest_id = b.guest_id WHERE b.status = 'completed' AND strftime('%Y', b.check_in) = '{year}' "
      "GROUP BY g.name ORDER BY total_nights DESC LIMIT {k}", k=K, year=YEARS),
    T("macro", ["How many bookings of {n} nights or more checked in during {season} season?",
                "Count {season}-season bookings lasting at least {n} nights.",
                "What is the number of stays of {n}+ nights that started in the {season} season?"],
      "SELECT COUNT(*) FROM bookings WHERE nights(check_in, check_out) >= {n} AND season(check_in) = '{season}'",
      n=(2, 3, 4, 5, 7, 10), season=("peak", "shoulder", "off")),
    T("macro", ["How many bookings did {hotel} get in each season?", "Count {hotel}'s bookings per season.",
                "Show the number of check-ins at {hotel} by season."],
      f"SELECT season(b.check_in) AS season, COUNT(*) AS booking_count FROM bookings AS b {HOTEL_JOIN} "
      "WHERE h.name = '{hotel}' GROUP BY season", hotel=HOTEL),
]

# ------------------------------------------------------------------------------------------------ hr

DEPT = "SELECT name FROM departments"
HR = [
    # simple
    T("simple", ["Which employees earn more than {salary}?", "List employees with a salary above {salary}.",
                 "Show the names and salaries of employees paid over {salary}."],
      "SELECT name, salary FROM employees WHERE salary > {salary}", salary=(110000, 120000, 130000, 140000, 150000)),
    T("simple", ["How many {leave_type} leave requests are {status}?",
                 "Count the {status} requests for {leave_type} leave.",
                 "What is the number of {leave_type} leave requests with status '{status}'?"],
      "SELECT COUNT(*) FROM leave_requests WHERE leave_type = '{leave_type}' AND status = '{status}'",
      leave_type="SELECT DISTINCT leave_type FROM leave_requests", status="SELECT DISTINCT status FROM leave_requests"),
    T("simple", ["How many reviews gave a rating of {rating} or higher?", "Count the reviews rated at least {rating}.",
                 "What is the number of performance reviews with a rating of {rating}+?"],
      "SELECT COUNT(*) FROM reviews WHERE rating >= {rating}", rating=(2, 3, 4, 5)),
    T("simple", ["How many employees earn between {lo} and {hi}?", "Count the employees with a salary from {lo} to {hi}.",
                 "What is the number of employees whose salary is between {lo} and {hi}?"],
      "SELECT COUNT(*) FROM employees WHERE salary BETWEEN {lo} AND {hi}",
      lo=(30000, 40000, 50000, 60000, 70000), hi=(80000, 90000, 100000, 120000)),
    T("simple", ["Which positions are at level {level} or above?", "List the job titles with a level of at least {level}.",
                 "Show positions whose level is {level} or higher."],
      "SELECT title, level FROM positions WHERE level >= {level}", level=(2, 3, 4, 5)),
    T("simple", ["Which departments have a budget over {budget}?", "List departments with budgets above {budget}.",
                 "Show the departments whose budget exceeds {budget}."],
      "SELECT name, budget FROM departments WHERE budget > {budget}", budget=(1000000, 2000000, 3000000, 4000000)),
    # aggregate
    T("aggregate", ["What is the average salary in each department?", "Show the mean salary per department.",
                    "For every department, what do employees earn on average?"],
      "SELECT d.name, ROUND(AVG(e.salary), 2) AS avg_salary FROM employees AS e JOIN departments AS d "
      "ON e.department_id = d.department_id GROUP BY d.name", target=1),
    T("aggregate", ["Which departments have more than {n} employees?", "List departments with a headcount above {n}.",
                    "Show departments employing more than {n} people, with their headcounts."],
      "SELECT d.name, COUNT(*) AS headcount FROM employees AS e JOIN departments AS d "
      "ON e.department_id = d.department_id GROUP BY d.name HAVING COUNT(*) > {n}", n=(20, 40, 60, 80, 100)),
    T("aggregate", ["What is the average review rating per year for employees in {department}?",
                    "Show the yearly mean rating of {department} employees.",
                    "For each year, what was the average performance rating in {department}?"],
      "SELECT strftime('%Y', r.review_date) AS year, ROUND(AVG(r.rating), 2) AS avg_rating FROM reviews AS r "
      "JOIN employees AS e ON r.employee_id = e.employee_id JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' GROUP BY year", department=DEPT),
    T("aggregate", ["How many leave requests of each type were made in {year}?",
                    "Count the {year} leave requests by leave type.", "Show the number of leave requests per type for {year}."],
      "SELECT leave_type, COUNT(*) AS request_count FROM leave_requests WHERE strftime('%Y', start_date) = '{year}' "
      "GROUP BY leave_type", year=YEARS),
    T("aggregate", ["Which {department} employees have made more than {n} leave requests?",
                    "List employees in {department} with over {n} leave requests.",
                    "Show {department} employees who requested leave more than {n} times, with their request counts."],
      "SELECT e.name, COUNT(*) AS request_count FROM employees AS e JOIN departments AS d "
      "ON e.department_id = d.department_id JOIN leave_requests AS l ON e.employee_id = l.employee_id "
      "WHERE d.name = '{department}' GROUP BY e.name HAVING COUNT(*) > {n}", department=DEPT, n=(2, 3, 4)),
    T("aggregate", ["What is the minimum, average and maximum salary for {title} positions?",
                    "Show the salary range and mean for employees with the title {title}.",
                    "For the {title} position, give the lowest, average and highest salary."],
      "SELECT MIN(e.salary), ROUND(AVG(e.salary), 2), MAX(e.salary) FROM employees AS e JOIN positions AS p "
      "ON e.position_id = p.position_id WHERE p.title = '{title}'", title="SELECT title FROM positions"),
    # topk
    T("topk", ["Who are the {k} highest-paid employees in {department}?",
               "List the top {k} salaries in the {department} department.",
               "Which {k} {department} employees earn the most?"],
      "SELECT e.name, e.salary FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' ORDER BY e.salary DESC LIMIT {k}", k=K, department=DEPT),
    T("topk", ["Who are the {k} most recently hired employees in {department}?",
               "List the {k} newest hires of the {department} department.",
               "Which {k} employees joined {department} most recently?"],
      "SELECT e.name, e.hire_date FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' ORDER BY e.hire_date DESC LIMIT {k}", k=K, department=DEPT),
    T("topk", ["Which {k} positions have the highest average salary?",
               "List the top {k} job titles by mean salary.", "What are the {k} best-paid positions on average?"],
      "SELECT p.title, ROUND(AVG(e.salary), 2) AS avg_salary FROM employees AS e JOIN positions AS p "
      "ON e.position_id = p.position_id GROUP BY p.title ORDER BY avg_salary DESC LIMIT {k}", k=K),
    T("topk", ["Which department has the highest average review rating in {year}?",
               "What department scored best on average in the {year} reviews?",
               "Find the department with the top mean rating for {year}."],
      "SELECT d.name, ROUND(AVG(r.rating), 2) AS avg_rating FROM reviews AS r JOIN employees AS e "
      "ON r.employee_id = e.employee_id JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE strftime('%Y', r.review_date) = '{year}' GROUP BY d.name ORDER BY avg_rating DESC LIMIT 1", year=YEARS),
    T("topk", ["Which {k} departments have the largest total payroll?",
               "List the top {k} departments by total salary cost.", "What are the {k} most expensive departments in salaries?"],
      "SELECT d.name, SUM(e.salary) AS total_salary FROM employees AS e JOIN departments AS d "
      "ON e.department_id = d.department_id GROUP BY d.name ORDER BY total_salary DESC LIMIT {k}", k=K),
    # join
    T("join", ["List the employees of {department} at level {level} or above with their titles.",
               "Which {department} employees hold a position of level {level} or higher?",
               "Show name and title of {department} staff whose position level is at least {level}."],
      "SELECT e.name, p.title FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "JOIN positions AS p ON e.position_id = p.position_id WHERE d.name = '{department}' AND p.level >= {level}",
      department=DEPT, level=(3, 4, 5)),
    T("join", ["Who is the manager of {employee}?", "Which employee manages {employee}?",
               "Find the name of {employee}'s manager."],
      "SELECT m.name FROM employees AS e JOIN employees AS m ON e.manager_id = m.employee_id WHERE e.name = '{employee}'",
      employee="SELECT name FROM employees WHERE manager_id IS NOT NULL"),
    T("join", ["Which employees hired in {year} report to {manager}?", "List {manager}'s reports hired in {year}.",
               "Show the employees managed by {manager} who joined in {year}."],
      "SELECT e.name FROM employees AS e JOIN employees AS m ON e.manager_id = m.employee_id "
      "WHERE m.name = '{manager}' AND strftime('%Y', e.hire_date) = '{year}'",
      manager="SELECT name FROM employees WHERE employee_id IN (SELECT manager_id FROM employees)",
      year=("2016", "2018", "2019", "2020", "2021", "2022", "2023", "2024")),
    T("join", ["What was the average review rating of {department} employees in {year}?",
               "How did {department} score on average in the {year} reviews?",
               "Compute the mean {year} rating of employees in {department}."],
      "SELECT ROUND(AVG(r.rating), 2) FROM reviews AS r JOIN employees AS e ON r.employee_id = e.employee_id "
      "JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND strftime('%Y', r.review_date) = '{year}'", department=DEPT, year=YEARS),
    T("join", ["Which {department} employees had {leave_type} leave approved in {year}?",
               "List {department} staff with approved {leave_type} leave in {year}.",
               "Show employees in {department} whose {leave_type} leave was approved in {year}."],
      "SELECT DISTINCT e.name FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "JOIN leave_requests AS l ON e.employee_id = l.employee_id WHERE d.name = '{department}' "
      "AND l.leave_type = '{leave_type}' AND l.status = 'approved' AND strftime('%Y', l.start_date) = '{year}'",
      department=DEPT, leave_type="SELECT DISTINCT leave_type FROM leave_requests", year=YEARS),
    T("join", ["How many {title}s work in {location}?", "Count the employees titled {title} based in {location}.",
               "What is the number of {title} employees in departments located in {location}?"],
      "SELECT COUNT(*) FROM employees AS e JOIN positions AS p ON e.position_id = p.position_id "
      "JOIN departments AS d ON e.department_id = d.department_id WHERE p.title = '{title}' AND d.location = '{location}'",
      title="SELECT title FROM positions", location="SELECT DISTINCT location FROM departments"),
    # nested
    T("nested", ["Which employees in {department} earn more than the department's average salary?",
                 "List {department} employees paid above their department average.",
                 "Show the {department} staff whose salary is higher than the average in {department}."],
      "SELECT e.name, e.salary FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND e.salary > (SELECT AVG(salary) FROM employees WHERE department_id = d.department_id)",
      department=DEPT),
    T("nested", ["Which {department} employees have never received a rating below {rating}?",
                 "List employees in {department} whose reviews were all {rating} or better.",
                 "Show {department} staff with no review rated under {rating}."],
      "SELECT e.name FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND e.employee_id IN (SELECT employee_id FROM reviews) AND e.employee_id NOT IN "
      "(SELECT employee_id FROM reviews WHERE rating < {rating})", department=DEPT, rating=(3, 4)),
    T("nested", ["Which {department} employees took no leave in {year}?",
                 "List {department} employees without any leave request in {year}.",
                 "Show employees of {department} who did not request leave during {year}."],
      "SELECT e.name FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND e.employee_id NOT IN "
      "(SELECT employee_id FROM leave_requests WHERE strftime('%Y', start_date) = '{year}')", department=DEPT, year=YEARS),
    T("nested", ["Which departments had an average {year} rating above the company average for {year}?",
                 "List departments that beat the overall mean review rating in {year}.",
                 "Show departments whose {year} average rating is higher than the company-wide {year} average."],
      "WITH dept_avg AS (SELECT e.department_id, AVG(r.rating) AS avg_rating FROM reviews AS r JOIN employees AS e "
      "ON r.employee_id = e.employee_id WHERE strftime('%Y', r.review_date) = '{year}' GROUP BY e.department_id) "
      "SELECT d.name, ROUND(x.avg_rating, 2) AS avg_rating FROM departments AS d JOIN dept_avg AS x "
      "ON d.department_id = x.department_id WHERE x.avg_rating > "
      "(SELECT AVG(rating) FROM reviews WHERE strftime('%Y', review_date) = '{year}')", year=YEARS),
    T("nested", ["Who got the highest rating in {department} in {year}?",
                 "Which {department} employees received the top rating given in their department in {year}?",
                 "List the best-rated {department} employees of {year}."],
      "SELECT e.name, r.rating FROM reviews AS r JOIN employees AS e ON r.employee_id = e.employee_id "
      "JOIN departments AS d ON e.department_id = d.department_id WHERE d.name = '{department}' "
      "AND strftime('%Y', r.review_date) = '{year}' AND r.rating = (SELECT MAX(r2.rating) FROM reviews AS r2 "
      "JOIN employees AS e2 ON r2.employee_id = e2.employee_id WHERE e2.department_id = d.department_id "
      "AND strftime('%Y', r2.review_date) = '{year}')", department=DEPT, year=YEARS),
    # date
    T("date", ["How many employees were hired in {year}?", "Count the employees who joined in {year}.",
               "What is the number of hires made in {year}?"],
      "SELECT COUNT(*) FROM employees WHERE strftime('%Y', hire_date) = '{year}'",
      year="SELECT DISTINCT strftime('%Y', hire_date) FROM employees"),
    T("date", ["How many leave requests started in {month}?", "Count the leave requests beginning in {month}.",
               "What is the number of leaves starting during {month}?"],
      "SELECT COUNT(*) FROM leave_requests WHERE strftime('%Y-%m', start_date) = '{ym}'", m=month),
    T("date", ["Which employees of {department} were hired between {start} and {end}?",
               "List {department} hires from {start} to {end}.",
               "Show {department} employees whose hire date falls between {start} and {end}."],
      "SELECT e.name, e.hire_date FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND e.hire_date BETWEEN '{start}' AND '{end}'", department=DEPT, r=date_range),
    T("date", ["How many {leave_type} leaves started in each month of {year}?",
               "Show the monthly count of {leave_type} leave requests in {year}.",
               "For each month of {year}, how many {leave_type} leaves began?"],
      "SELECT strftime('%Y-%m', start_date) AS month, COUNT(*) AS request_count FROM leave_requests "
      "WHERE leave_type = '{leave_type}' AND strftime('%Y', start_date) = '{year}' GROUP BY month ORDER BY month",
      leave_type="SELECT DISTINCT leave_type FROM leave_requests", year=YEARS),
    T("date", ["How many employees hired before {day} work in {department}?",
               "Count the {department} employees who joined before {day}.",
               "What is the number of {department} staff with a hire date earlier than {day}?"],
      "SELECT COUNT(*) FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND e.hire_date < '{day}'", department=DEPT, day=day),
    # percent
    T("percent", ["What percentage of employees work in {department}?",
                  "What share of the workforce is in the {department} department?",
                  "What percent of all employees belong to {department}?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM employees), 2) FROM employees AS e "
      "JOIN departments AS d ON e.department_id = d.department_id WHERE d.name = '{department}'", department=DEPT),
    T("percent", ["What percentage of leave requests in {year} were {status}?",
                  "What share of {year} leave requests ended up {status}?",
                  "In {year}, what percent of leave requests have status '{status}'?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM leave_requests WHERE strftime('%Y', start_date) = '{year}'), 2) "
      "FROM leave_requests WHERE strftime('%Y', start_date) = '{year}' AND status = '{status}'",
      status="SELECT DISTINCT status FROM leave_requests", year=YEARS),
    T("percent", ["Show each department's total salary cost and its share of the company payroll.",
                  "What percentage of total payroll does each department account for?",
                  "For every department, give the salary total and percent of all salaries."],
      "SELECT d.name, SUM(e.salary) AS total_salary, ROUND(100.0 * SUM(e.salary) / (SELECT SUM(salary) FROM employees), 2) "
      "AS pct_of_total FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id GROUP BY d.name",
      target=1),
    T("percent", ["What percentage of {year} reviews had a rating of {rating} or higher?",
                  "What share of reviews in {year} were rated at least {rating}?",
                  "In {year}, what percent of ratings were {rating} or above?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM reviews WHERE strftime('%Y', review_date) = '{year}'), 2) "
      "FROM reviews WHERE strftime('%Y', review_date) = '{year}' AND rating >= {rating}", year=YEARS, rating=(2, 3, 4, 5)),
    T("percent", ["What percentage of {department} employees hold a level {level}+ position?",
                  "What share of {department} staff are at position level {level} or above?",
                  "In {department}, what percent of employees have a position level of at least {level}?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN p.level >= {level} THEN 1 ELSE 0 END) / COUNT(*), 2) FROM employees AS e "
      "JOIN positions AS p ON e.position_id = p.position_id JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}'", department=DEPT, level=(2, 3, 4)),
    # macro
    T("macro", ["How many {department} employees are in salary band {band}?",
                "Count the employees of {department} whose pay band is {band}.",
                "What is the number of {department} staff in band {band}?"],
      "SELECT COUNT(*) FROM employees AS e JOIN departments AS d ON e.department_id = d.department_id "
      "WHERE d.name = '{department}' AND salary_band(e.salary) = '{band}'",
      department=DEPT, band=("B1", "B2", "B3", "B4", "B5")),
    T("macro", ["How many business days of approved {leave_type} leave were taken in {year}?",
                "Total the working days of approved {leave_type} leave starting in {year}.",
                "Sum the business days of {leave_type} leave approved for {year}."],
      "SELECT SUM(business_days(start_date, end_date)) FROM leave_requests WHERE leave_type = '{leave_type}' "
      "AND status = 'approved' AND strftime('%Y', start_date) = '{year}'",
      leave_type="SELECT DISTINCT leave_type FROM leave_requests", year=YEARS),
    T("macro", ["Which {k} employees took the most business days of approved leave in {year}?",
                "List the top {k} employees by working days of approved leave in {year}.",
                "Who were the {k} employees with the most business days off (approved) in {year}?"],
      "SELECT e.name, SUM(business_days(l.start_date, l.end_date)) AS leave_days FROM employees AS e "
      "JOIN leave_requests AS l ON e.employee_id = l.employee_id WHERE l.status = 'approved' "
      "AND strftime('%Y', l.start_date) = '{year}' GROUP BY e.name ORDER BY leave_days DESC LIMIT {k}", k=K, year=YEARS),
    T("macro", ["How many employees of {department} are in each salary band?",
                "Show the salary band breakdown of {department}.", "Count {department} employees per pay band."],
      "SELECT salary_band(e.salary) AS band, COUNT(*) AS headcount FROM employees AS e JOIN departments AS d "
      "ON e.department_id = d.department_id WHERE d.name = '{department}' GROUP BY band ORDER BY band", department=DEPT),
    T("macro", ["What is the average length in business days of {leave_type} leave requests in {year}?",
                "On average, how many working days did {leave_type} leaves starting in {year} last?",
                "Compute the mean business-day length of {year} {leave_type} leave."],
      "SELECT ROUND(AVG(business_days(start_date, end_date)), 2) FROM leave_requests WHERE leave_type = '{leave_type}' "
      "AND strftime('%Y', start_date) = '{year}'", leave_type="SELECT DISTINCT leave_type FROM leave_requests", year=YEARS),
    T("macro", ["Which {title}s are in salary band {band}?", "List employees titled {title} in pay band {band}.",
                "Show the {title} employees whose salary falls in band {band}."],
      "SELECT e.name, e.salary FROM employees AS e JOIN positions AS p ON e.position_id = p.position_id "
      "WHERE p.title = '{title}' AND salary_band(e.salary) = '{band}'",
      title="SELECT title FROM positions", band=("B1", "B2", "B3", "B4", "B5")),
]

# ----------------------------------------------------------------------------------------- logistics
# A shipment with a NULL delivery_date is still in transit.

WAREHOUSE = "SELECT name FROM warehouses"
CARRIER = "SELECT name FROM carriers"
ROUTE_JOIN = "JOIN routes AS r ON s.route_id = r.route_id JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id"
LOGISTICS = [
    # simple
    T("simple", ["Which carriers use {mode} transport?", "List the {mode} carriers.",
                 "Show the names and ratings of carriers whose mode is {mode}."],
      "SELECT name, rating FROM carriers WHERE mode = '{mode}'", mode="SELECT DISTINCT mode FROM carriers"),
    T("simple", ["How many shipments weighed more than {weight} kg and cost less than {cost}?",
                 "Count the shipments heavier than {weight} kg with a cost under {cost}.",
                 "What is the number of shipments over {weight} kg that cost below {cost}?"],
      "SELECT COUNT(*) FROM shipments WHERE weight_kg > {weight} AND cost < {cost}",
      weight=(10, 50, 100, 250, 500, 1000), cost=(50, 100, 200, 500, 1000)),
    T("simple", ["Which routes are longer than {km} km?", "List routes with a distance above {km} km.",
                 "Show the destination and distance of routes over {km} km."],
      "SELECT route_id, destination, distance_km FROM routes WHERE distance_km > {km}", km=(1000, 2000, 3000, 4000)),
    T("simple", ["Which warehouses can hold more than {capacity} units?", "List warehouses with capacity above {capacity}.",
                 "Show warehouses whose capacity exceeds {capacity}."],
      "SELECT name, capacity FROM warehouses WHERE capacity > {capacity}", capacity=(10000, 20000, 30000, 40000, 50000)),
    T("simple", ["How many shipments are still in transit?", "Count the shipments that have not been delivered yet.",
                 "What is the number of shipments without a delivery date?"],
      "SELECT COUNT(*) FROM shipments WHERE delivery_date IS NULL", target=1),
    T("simple", ["How many shipments shipped on {day} weighed over {weight} kg?",
                 "Count the shipments sent on {day} heavier than {weight} kg.",
                 "What is the number of shipments from {day} with a weight above {weight} kg?"],
      "SELECT COUNT(*) FROM shipments WHERE ship_date = '{day}' AND weight_kg > {weight}",
      day="SELECT DISTINCT ship_date FROM shipments", weight=(1, 5, 10, 20)),
    # aggregate
    T("aggregate", ["How many shipments did each carrier handle in {year}?", "Count the {year} shipments per carrier.",
                    "Show the number of shipments by carrier for {year}."],
      "SELECT c.name, COUNT(*) AS shipment_count FROM shipments AS s JOIN carriers AS c ON s.carrier_id = c.carrier_id "
      "WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY c.name", year=YEARS),
    T("aggregate", ["Which destinations are served by more than {n} routes?",
                    "List destinations with over {n} routes.", "Show destinations reached by more than {n} routes."],
      "SELECT destination, COUNT(*) AS route_count FROM routes GROUP BY destination HAVING COUNT(*) > {n}",
      n=(1, 2, 3, 4)),
    T("aggregate", ["What total weight did each warehouse ship in {year}?",
                    "Show the kilograms shipped per warehouse in {year}.",
                    "For {year}, give the total shipped weight of every warehouse."],
      f"SELECT w.name, ROUND(SUM(s.weight_kg), 2) AS total_weight FROM shipments AS s {ROUTE_JOIN} "
      "WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY w.name", year=YEARS),
    T("aggregate", ["What is the average shipment cost per transport mode in {year}?",
                    "Show the mean cost of {year} shipments by carrier mode.",
                    "For each mode, what did a shipment cost on average in {year}?"],
      "SELECT c.mode, ROUND(AVG(s.cost), 2) AS avg_cost FROM shipments AS s JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY c.mode", year=YEARS),
    T("aggregate", ["Which routes had more than {n} shipments?", "List routes used by over {n} shipments.",
                    "Show route ids and destinations with more than {n} shipments."],
      "SELECT r.route_id, r.destination, COUNT(*) AS shipment_count FROM shipments AS s JOIN routes AS r "
      "ON s.route_id = r.route_id GROUP BY r.route_id, r.destination HAVING COUNT(*) > {n}", n=(50, 75, 100, 150)),
    T("aggregate", ["How many shipments went to each destination from {warehouse}?",
                    "Count {warehouse}'s shipments per destination.", "Show shipments by destination for {warehouse}."],
      f"SELECT r.destination, COUNT(*) AS shipment_count FROM shipments AS s {ROUTE_JOIN} "
      "WHERE w.name = '{warehouse}' GROUP BY r.destination", warehouse=WAREHOUSE),
    # topk
    T("topk", ["What were the {k} heaviest shipments in {month}?", "List the {k} heaviest shipments sent in {month}.",
               "Show the top {k} shipments by weight from {month}."],
      "SELECT shipment_id, weight_kg FROM shipments WHERE strftime('%Y-%m', ship_date) = '{ym}' "
      "ORDER BY weight_kg DESC LIMIT {k}", k=K, m=month),
    T("topk", ["What are the {k} longest routes from {warehouse}?", "List the {k} longest routes out of {warehouse}.",
               "Show the top {k} routes by distance starting at {warehouse}."],
      "SELECT r.destination, r.distance_km FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.name = '{warehouse}' ORDER BY r.distance_km DESC LIMIT {k}", k=(2, 3, 5), warehouse=WAREHOUSE),
    T("topk", ["Which {k} carriers billed the most in {year}?", "List the top {k} carriers by total shipping cost in {year}.",
               "What are the {k} carriers with the highest total cost for {year}?"],
      "SELECT c.name, ROUND(SUM(s.cost), 2) AS total_cost FROM shipments AS s JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY c.name "
      "ORDER BY total_cost DESC LIMIT {k}", k=K, year=YEARS),
    T("topk", ["Which {k} destinations received the most shipments in {year}?",
               "List the top {k} destinations by shipment count in {year}.",
               "What were the {k} busiest destinations in {year}?"],
      "SELECT r.destination, COUNT(*) AS shipment_count FROM shipments AS s JOIN routes AS r ON s.route_id = r.route_id "
      "WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY r.destination ORDER BY shipment_count DESC LIMIT {k}",
      k=K, year=YEARS),
    T("topk", ["Which warehouse shipped the most kilograms with {carrier}?",
               "Which warehouse sent the greatest total weight via {carrier}?",
               "Find the warehouse with the highest shipped weight using {carrier}."],
      f"SELECT w.name, ROUND(SUM(s.weight_kg), 2) AS total_weight FROM shipments AS s {ROUTE_JOIN} JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE c.name = '{carrier}' GROUP BY w.name ORDER BY total_weight DESC LIMIT 1",
      carrier=CARRIER),
    # join
    T("join", ["How many shipments went from {warehouse} to {destination}?",
               "Count the shipments sent from {warehouse} to {destination}.",
               "What is the number of shipments on the {warehouse} to {destination} route?"],
      f"SELECT COUNT(*) FROM shipments AS s {ROUTE_JOIN} WHERE w.name = '{{warehouse}}' AND r.destination = '{{destination}}'",
      pair="SELECT w.name AS warehouse, r.destination FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id"),
    T("join", ["Which carriers delivered to {destination} in {year}?", "List carriers with {year} shipments to {destination}.",
               "Show the carriers that shipped to {destination} during {year}."],
      "SELECT DISTINCT c.name FROM carriers AS c JOIN shipments AS s ON c.carrier_id = s.carrier_id "
      "JOIN routes AS r ON s.route_id = r.route_id WHERE r.destination = '{destination}' "
      "AND strftime('%Y', s.ship_date) = '{year}'", destination="SELECT DISTINCT destination FROM routes", year=YEARS),
    T("join", ["What was the total cost of {carrier} shipments leaving warehouses in {city}?",
               "How much did shipments from {city} warehouses with {carrier} cost in total?",
               "Sum the cost of {carrier} shipments from warehouses located in {city}."],
      f"SELECT ROUND(SUM(s.cost), 2) FROM shipments AS s {ROUTE_JOIN} JOIN carriers AS c ON s.carrier_id = c.carrier_id "
      "WHERE c.name = '{carrier}' AND w.city = '{city}'", carrier=CARRIER, city="SELECT city FROM warehouses"),
    T("join", ["List the routes from the warehouse in {city}.", "Which destinations does the {city} warehouse serve?",
               "Show destinations and distances of routes starting in {city}."],
      "SELECT r.destination, r.distance_km FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.city = '{city}'", city="SELECT city FROM warehouses"),
    T("join", ["Which shipments from {warehouse} in {month} were handled by {mode} carriers?",
               "List {month} shipments out of {warehouse} using {mode} transport.",
               "Show the {mode} shipments that left {warehouse} in {month}."],
      f"SELECT s.shipment_id, s.ship_date, c.name FROM shipments AS s {ROUTE_JOIN} JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE w.name = '{warehouse}' AND c.mode = '{mode}' "
      "AND strftime('%Y-%m', s.ship_date) = '{ym}'", warehouse=WAREHOUSE, mode="SELECT DISTINCT mode FROM carriers", m=month),
    T("join", ["What is the average rating of carriers that shipped from {warehouse}?",
               "On average, how are the carriers used by {warehouse} rated?",
               "Compute the mean rating of carriers serving {warehouse}."],
      "SELECT ROUND(AVG(rating), 2) FROM carriers WHERE carrier_id IN (SELECT s.carrier_id FROM shipments AS s "
      "JOIN routes AS r ON s.route_id = r.route_id JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.name = '{warehouse}')", warehouse=WAREHOUSE),
    # nested
    T("nested", ["Which carriers have never shipped from {warehouse} to {destination}?",
                 "List carriers with no shipments on the {warehouse} to {destination} route.",
                 "Show the carriers never used between {warehouse} and {destination}."],
      "SELECT name FROM carriers WHERE carrier_id NOT IN (SELECT s.carrier_id FROM shipments AS s JOIN routes AS r "
      "ON s.route_id = r.route_id JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.name = '{warehouse}' AND r.destination = '{destination}')",
      pair="SELECT w.name AS warehouse, r.destination FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id"),
    T("nested", ["Which {carrier} shipments in {month} cost more than that carrier's average?",
                 "List {month} shipments by {carrier} priced above {carrier}'s average cost.",
                 "Show {carrier} shipments from {month} whose cost beats the carrier average."],
      "SELECT s.shipment_id, s.cost FROM shipments AS s JOIN carriers AS c ON s.carrier_id = c.carrier_id "
      "WHERE c.name = '{carrier}' AND strftime('%Y-%m', s.ship_date) = '{ym}' "
      "AND s.cost > (SELECT AVG(cost) FROM shipments WHERE carrier_id = c.carrier_id)", carrier=CARRIER, m=month),
    T("nested", ["Which warehouses shipped more than {weight} kg in {year}?",
                 "List warehouses whose {year} shipped weight exceeded {weight} kg.",
                 "Show the warehouses with over {weight} kg shipped during {year}."],
      "WITH shipped AS (SELECT r.warehouse_id, SUM(s.weight_kg) AS total FROM shipments AS s JOIN routes AS r "
      "ON s.route_id = r.route_id WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY r.warehouse_id) "
      "SELECT w.name, ROUND(x.total, 2) AS total_weight FROM warehouses AS w JOIN shipped AS x "
      "ON w.warehouse_id = x.warehouse_id WHERE x.total > {weight}", weight=(10000, 20000, 30000, 50000), year=YEARS),
    T("nested", ["Which routes from {warehouse} were not used in {year}?",
                 "List {warehouse} routes without shipments in {year}.", "Show unused {warehouse} routes in {year}."],
      "SELECT r.route_id, r.destination FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.name = '{warehouse}' AND r.route_id NOT IN "
      "(SELECT route_id FROM shipments WHERE strftime('%Y', ship_date) = '{year}')", warehouse=WAREHOUSE, year=YEARS),
    T("nested", ["How many shipments cost more than the average shipment in {year}?",
                 "Count the {year} shipments priced above that year's average cost.",
                 "What is the number of {year} shipments with an above-average cost?"],
      "SELECT COUNT(*) FROM shipments WHERE strftime('%Y', ship_date) = '{year}' "
      "AND cost > (SELECT AVG(cost) FROM shipments WHERE strftime('%Y', ship_date) = '{year}')", year=YEARS),
    # date
    T("date", ["How many shipments did {carrier} send in each month of {year}?",
               "Show {carrier}'s monthly shipment count for {year}.", "For each month of {year}, count {carrier}'s shipments."],
      "SELECT strftime('%Y-%m', s.ship_date) AS month, COUNT(*) AS shipment_count FROM shipments AS s "
      "JOIN carriers AS c ON s.carrier_id = c.carrier_id WHERE c.name = '{carrier}' "
      "AND strftime('%Y', s.ship_date) = '{year}' GROUP BY month ORDER BY month", carrier=CARRIER, year=YEARS),
    T("date", ["How many shipments were sent in {month}?", "Count the shipments shipped in {month}.",
               "What is the number of shipments with a ship date in {month}?"],
      "SELECT COUNT(*) FROM shipments WHERE strftime('%Y-%m', ship_date) = '{ym}'", m=month),
    T("date", ["What is the average delivery time in days for {mode} carriers?",
               "On average, how many days do {mode} shipments take to arrive?",
               "Compute the mean days between ship and delivery date for {mode} transport."],
      "SELECT ROUND(AVG(julianday(s.delivery_date) - julianday(s.ship_date)), 2) FROM shipments AS s "
      "JOIN carriers AS c ON s.carrier_id = c.carrier_id WHERE c.mode = '{mode}' AND s.delivery_date IS NOT NULL",
      mode="SELECT DISTINCT mode FROM carriers"),
    T("date", ["How many shipments left {warehouse} between {start} and {end}?",
               "Count shipments from {warehouse} shipped from {start} to {end}.",
               "What is the number of {warehouse} shipments with a ship date between {start} and {end}?"],
      f"SELECT COUNT(*) FROM shipments AS s {ROUTE_JOIN} WHERE w.name = '{{warehouse}}' "
      "AND s.ship_date BETWEEN '{start}' AND '{end}'", warehouse=WAREHOUSE, r=date_range),
    T("date", ["What was the total shipping cost in each quarter of {year}?", "Show quarterly shipping costs for {year}.",
               "Break down {year} shipment costs by quarter."],
      "SELECT (CAST(strftime('%m', ship_date) AS INTEGER) + 2) / 3 AS quarter, ROUND(SUM(cost), 2) AS total_cost "
      "FROM shipments WHERE strftime('%Y', ship_date) = '{year}' GROUP BY quarter ORDER BY quarter", year=YEARS),
    T("date", ["How many shipments delivered in {quarter} took more than {n} days?",
               "Count {quarter} deliveries that needed over {n} days in transit.",
               "What is the number of shipments delivered during {quarter} after more than {n} days?"],
      "SELECT COUNT(*) FROM shipments WHERE delivery_date BETWEEN '{q_start}' AND '{q_end}' "
      "AND julianday(delivery_date) - julianday(ship_date) > {n}", q=quarter, n=(2, 3, 5, 7, 10)),
    # percent
    T("percent", ["What share of {year} shipments did each carrier handle?",
                  "Show each carrier's shipment count and percentage of all shipments in {year}.",
                  "For {year}, what percent of shipments went with each carrier?"],
      "SELECT c.name, COUNT(*) AS shipment_count, ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM shipments "
      "WHERE strftime('%Y', ship_date) = '{year}'), 2) AS pct_of_total FROM shipments AS s JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY c.name", year=YEARS),
    T("percent", ["What percentage of shipments from {warehouse} are still in transit?",
                  "What share of {warehouse}'s shipments has no delivery date yet?",
                  "Among shipments out of {warehouse}, what percent are undelivered?"],
      f"SELECT ROUND(100.0 * SUM(CASE WHEN s.delivery_date IS NULL THEN 1 ELSE 0 END) / COUNT(*), 2) "
      f"FROM shipments AS s {ROUTE_JOIN} WHERE w.name = '{{warehouse}}'", warehouse=WAREHOUSE),
    T("percent", ["Show the total shipping cost per transport mode and its share of all costs.",
                  "What percentage of total shipping cost does each mode account for?",
                  "For each carrier mode, give the total cost and its percent of the overall cost."],
      "SELECT c.mode, ROUND(SUM(s.cost), 2) AS total_cost, ROUND(100.0 * SUM(s.cost) / (SELECT SUM(cost) FROM shipments), 2) "
      "AS pct_of_total FROM shipments AS s JOIN carriers AS c ON s.carrier_id = c.carrier_id GROUP BY c.mode", target=1),
    T("percent", ["What percentage of {year} shipping cost was billed by {carrier}?",
                  "What share of {year} shipment costs went to {carrier}?",
                  "In {year}, what percent of total shipping cost came from {carrier}?"],
      "SELECT ROUND(100.0 * SUM(s.cost) / (SELECT SUM(cost) FROM shipments WHERE strftime('%Y', ship_date) = '{year}'), 2) "
      "FROM shipments AS s JOIN carriers AS c ON s.carrier_id = c.carrier_id WHERE c.name = '{carrier}' "
      "AND strftime('%Y', s.ship_date) = '{year}'", carrier=CARRIER, year=YEARS),
    T("percent", ["What percentage of shipments to {destination} weighed over {weight} kg?",
                  "What share of shipments bound for {destination} were heavier than {weight} kg?",
                  "Among shipments to {destination}, what percent weigh more than {weight} kg?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN s.weight_kg > {weight} THEN 1 ELSE 0 END) / COUNT(*), 2) "
      "FROM shipments AS s JOIN routes AS r ON s.route_id = r.route_id WHERE r.destination = '{destination}'",
      destination="SELECT DISTINCT destination FROM routes", weight=(10, 50, 100, 500)),
    # macro
    T("macro", ["What is the average number of business days in transit for {carrier}?",
                "On average, how many working days do {carrier} deliveries take?",
                "Compute {carrier}'s mean transit time in business days."],
      "SELECT ROUND(AVG(business_days(s.ship_date, s.delivery_date)), 2) FROM shipments AS s JOIN carriers AS c "
      "ON s.carrier_id = c.carrier_id WHERE c.name = '{carrier}' AND s.delivery_date IS NOT NULL", carrier=CARRIER),
    T("macro", ["How many shipments on {band}-haul routes were sent in {year}?",
                "Count the {year} shipments over {band} routes.",
                "What is the number of {band}-distance shipments in {year}?"],
      "SELECT COUNT(*) FROM shipments AS s JOIN routes AS r ON s.route_id = r.route_id "
      "WHERE distance_band(r.distance_km) = '{band}' AND strftime('%Y', s.ship_date) = '{year}'",
      band=("short", "medium", "long"), year=YEARS),
    T("macro", ["How many shipments did {carrier} carry in each distance band?",
                "Show {carrier}'s shipments per haul class.", "Count {carrier} shipments by distance band."],
      "SELECT distance_band(r.distance_km) AS band, COUNT(*) AS shipment_count FROM shipments AS s "
      "JOIN routes AS r ON s.route_id = r.route_id JOIN carriers AS c ON s.carrier_id = c.carrier_id "
      "WHERE c.name = '{carrier}' GROUP BY band", carrier=CARRIER),
    T("macro", ["How many shipments sent in {month} took more than {n} business days to deliver?",
                "Count the {month} shipments with over {n} working days in transit.",
                "What is the number of shipments from {month} delivered after more than {n} business days?"],
      "SELECT COUNT(*) FROM shipments WHERE strftime('%Y-%m', ship_date) = '{ym}' "
      "AND business_days(ship_date, delivery_date) > {n}", m=month, n=(2, 3, 4, 5, 8)),
    T("macro", ["List the {band}-haul routes from {warehouse}.", "Which routes out of {warehouse} are {band} haul?",
                "Show {warehouse}'s {band}-distance routes."],
      "SELECT r.destination, r.distance_km FROM routes AS r JOIN warehouses AS w ON r.warehouse_id = w.warehouse_id "
      "WHERE w.name = '{warehouse}' AND distance_band(r.distance_km) = '{band}'",
      warehouse=WAREHOUSE, band=("short", "medium", "long")),
    T("macro", ["What is the average cost of {band}-haul shipments by {mode} carriers?",
                "On average, what does a {band}-distance {mode} shipment cost?",
                "Compute the mean cost of {mode} shipments on {band} routes."],
      "SELECT ROUND(AVG(s.cost), 2) FROM shipments AS s JOIN routes AS r ON s.route_id = r.route_id "
      "JOIN carriers AS c ON s.carrier_id = c.carrier_id WHERE distance_band(r.distance_km) = '{band}' "
      "AND c.mode = '{mode}'", band=("short", "medium", "long"), mode="SELECT DISTINCT mode FROM carriers"),
]

# ------------------------------------------------------------------------------------------- finance
# Transaction amounts include tax; net_amount(amount, tax_rate) removes it. Budgets are per fiscal quarter.

ACCOUNT = "SELECT name FROM accounts"
FIN_DEPT = "SELECT name FROM departments"
VENDOR = "SELECT DISTINCT vendor FROM transactions"
FQ = "SELECT DISTINCT fiscal_quarter(txn_date) FROM transactions"
FY = ("2021", "2022", "2023", "2024")
TAX = (P("0%", "0.0"), P("7%", "0.07"), P("10%", "0.1"), P("20%", "0.2"))
FINANCE = [
    # simple
    T("simple", ["Which transactions with {vendor} were larger than {amount}?",
                 "List payments to {vendor} above {amount}.",
                 "Show id, date and amount of {vendor} transactions over {amount}."],
      "SELECT transaction_id, txn_date, amount FROM transactions WHERE vendor = '{vendor}' AND amount > {amount}",
      vendor=VENDOR, amount=(5000, 10000, 20000, 30000)),
    T("simple", ["List the {account_type} accounts.", "Which accounts are of type {account_type}?",
                 "Show all accounts whose type is {account_type}."],
      "SELECT name FROM accounts WHERE account_type = '{account_type}'",
      account_type="SELECT DISTINCT account_type FROM accounts"),
    T("simple", ["How many transactions were taxed at {tax} and exceeded {amount}?",
                 "Count transactions with a {tax} tax rate and an amount above {amount}.",
                 "What is the number of transactions over {amount} with tax rate {tax}?"],
      "SELECT COUNT(*) FROM transactions WHERE tax_rate = {tax} AND amount > {amount}",
      tax=TAX, amount=(1000, 2000, 5000, 10000, 20000)),
    T("simple", ["How many transactions have no vendor?", "Count the transactions without a vendor.",
                 "What is the number of transactions where the vendor is missing?"],
      "SELECT COUNT(*) FROM transactions WHERE vendor IS NULL", target=1),
    T("simple", ["Which departments are in the {region} region?", "List the departments located in {region}.",
                 "Show all {region} departments."],
      "SELECT name FROM departments WHERE region = '{region}'", region="SELECT DISTINCT region FROM departments"),
    T("simple", ["What was the total amount paid to {vendor}?", "How much have we paid {vendor} in total?",
                 "Sum all transaction amounts for vendor {vendor}."],
      "SELECT ROUND(SUM(amount), 2) FROM transactions WHERE vendor = '{vendor}'", vendor=VENDOR),
    # aggregate
    T("aggregate", ["What was the total spend per vendor in {year}?", "Show total transaction amounts by vendor for {year}.",
                    "For {year}, how much was paid to each vendor?"],
      "SELECT vendor, ROUND(SUM(amount), 2) AS total_amount FROM transactions WHERE vendor IS NOT NULL "
      "AND strftime('%Y', txn_date) = '{year}' GROUP BY vendor", year=YEARS),
    T("aggregate", ["Which vendors had more than {n} transactions?", "List vendors with over {n} transactions.",
                    "Show vendors that appear in more than {n} transactions, with their counts."],
      "SELECT vendor, COUNT(*) AS txn_count FROM transactions WHERE vendor IS NOT NULL GROUP BY vendor "
      "HAVING COUNT(*) > {n}", n=(50, 100, 150, 200, 300)),
    T("aggregate", ["What is the average transaction amount for each tax rate?",
                    "Show the mean amount per tax rate.", "For every tax rate, what is the average transaction amount?"],
      "SELECT tax_rate, ROUND(AVG(amount), 2) AS avg_amount FROM transactions GROUP BY tax_rate", target=1),
    T("aggregate", ["What was the total amount per account type in {year}?",
                    "Show {year} transaction totals by account type.", "For {year}, sum the transactions of each account type."],
      "SELECT a.account_type, ROUND(SUM(t.amount), 2) AS total_amount FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id WHERE strftime('%Y', t.txn_date) = '{year}' GROUP BY a.account_type", year=YEARS),
    T("aggregate", ["Which accounts had more than {n} transactions in {year}?",
                    "List accounts with over {n} transactions during {year}.",
                    "Show accounts that booked more than {n} transactions in {year}, with counts."],
      "SELECT a.name, COUNT(*) AS txn_count FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "WHERE strftime('%Y', t.txn_date) = '{year}' GROUP BY a.name HAVING COUNT(*) > {n}",
      n=(20, 50, 80, 100, 150), year=YEARS),
    # topk
    T("topk", ["What were the {k} largest transactions in {month}?", "List the {k} biggest transactions of {month}.",
               "Show the top {k} transactions by amount in {month}."],
      "SELECT transaction_id, vendor, amount FROM transactions WHERE strftime('%Y-%m', txn_date) = '{ym}' "
      "ORDER BY amount DESC LIMIT {k}", k=K, m=month),
    T("topk", ["Which {k} vendors received the most money in {year}?",
               "List the top {k} vendors by total payments in {year}.",
               "What are the {k} vendors with the highest spend in {year}?"],
      "SELECT vendor, ROUND(SUM(amount), 2) AS total_amount FROM transactions WHERE vendor IS NOT NULL "
      "AND strftime('%Y', txn_date) = '{year}' GROUP BY vendor ORDER BY total_amount DESC LIMIT {k}", k=K, year=YEARS),
    T("topk", ["Which {k} accounts of {department} have the most transactions?",
               "List the {k} busiest {department} accounts by transaction count.",
               "What are the top {k} accounts in {department} by number of transactions?"],
      "SELECT a.name, COUNT(*) AS txn_count FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' "
      "GROUP BY a.name ORDER BY txn_count DESC LIMIT {k}", k=(1, 2, 3), department=FIN_DEPT),
    T("topk", ["Which {k} departments spent the most in {year}?", "List the top {k} departments by {year} expenses.",
               "What are the {k} departments with the highest expense totals in {year}?"],
      "SELECT d.name, ROUND(SUM(t.amount), 2) AS total_expense FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE a.account_type = 'expense' AND strftime('%Y', t.txn_date) = '{year}' GROUP BY d.name "
      "ORDER BY total_expense DESC LIMIT {k}", k=K, year=YEARS),
    # join
    T("join", ["What did the {department} department spend in {year}?",
               "How much were {department}'s expenses in {year}?", "Sum the {year} expense transactions of {department}."],
      "SELECT ROUND(SUM(t.amount), 2) FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' "
      "AND a.account_type = 'expense' AND strftime('%Y', t.txn_date) = '{year}'", department=FIN_DEPT, year=YEARS),
    T("join", ["List the transactions of the {account} account in {month}.",
               "Show {month} transactions booked on {account}.", "Which transactions hit the {account} account in {month}?"],
      "SELECT t.transaction_id, t.txn_date, t.amount FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id WHERE a.name = '{account}' AND strftime('%Y-%m', t.txn_date) = '{ym}'",
      account=ACCOUNT, m=month),
    T("join", ["Which vendors did the {department} department pay in {year}?",
               "List the vendors paid by {department} during {year}.", "Show every vendor {department} used in {year}."],
      "SELECT DISTINCT t.vendor FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' "
      "AND t.vendor IS NOT NULL AND strftime('%Y', t.txn_date) = '{year}'", department=FIN_DEPT, year=YEARS),
    T("join", ["What were total expenses per region in {year}?", "Show {year} expense totals by region.",
               "For {year}, how much did each region spend?"],
      "SELECT d.region, ROUND(SUM(t.amount), 2) AS total_expense FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE a.account_type = 'expense' AND strftime('%Y', t.txn_date) = '{year}' GROUP BY d.region", year=YEARS),
    T("join", ["How much did {department} pay {vendor}?", "What is the total {department} spent with {vendor}?",
               "Sum the transactions between {department} and vendor {vendor}."],
      "SELECT ROUND(SUM(t.amount), 2) FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' AND t.vendor = '{vendor}'",
      department=FIN_DEPT, vendor=VENDOR),
    T("join", ["What is the budget of {account} for {fq}?", "How much was budgeted on {account} in {fq}?",
               "Show the {fq} budget of the {account} account."],
      "SELECT b.amount FROM budgets AS b JOIN accounts AS a ON b.account_id = a.account_id "
      "WHERE a.name = '{account}' AND b.fiscal_quarter = '{fq}'",
      account=ACCOUNT, fq="SELECT DISTINCT fiscal_quarter FROM budgets"),
    # nested
    T("nested", ["Which {department} accounts had no transactions in {month}?",
                 "List {department} accounts without any transaction in {month}.",
                 "Show accounts of {department} that were not used in {month}."],
      "SELECT a.name FROM accounts AS a JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE d.name = '{department}' AND a.account_id NOT IN "
      "(SELECT account_id FROM transactions WHERE strftime('%Y-%m', txn_date) = '{ym}')", department=FIN_DEPT, m=month),
    T("nested", ["Which {account} transactions in {year} were above the account's average amount?",
                 "List {year} transactions on {account} larger than that account's mean.",
                 "Show {account} transactions from {year} exceeding its average transaction."],
      "SELECT t.transaction_id, t.amount FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "WHERE a.name = '{account}' AND strftime('%Y', t.txn_date) = '{year}' "
      "AND t.amount > (SELECT AVG(amount) FROM transactions WHERE account_id = a.account_id)", account=ACCOUNT, year=YEARS),
    T("nested", ["Which departments spent more than {amount} in {year}?",
                 "List departments whose {year} expenses exceeded {amount}.",
                 "Show the departments with over {amount} of expenses during {year}."],
      "WITH spend AS (SELECT a.department_id, SUM(t.amount) AS total FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id WHERE a.account_type = 'expense' AND strftime('%Y', t.txn_date) = '{year}' "
      "GROUP BY a.department_id) SELECT d.name, ROUND(s.total, 2) AS total_expense FROM departments AS d "
      "JOIN spend AS s ON d.department_id = s.department_id WHERE s.total > {amount}",
      amount=(100000, 200000, 500000, 1000000), year=YEARS),
    T("nested", ["Which vendors were paid by {department} but never by {other}?",
                 "List vendors that {department} used and {other} did not.",
                 "Show the vendors of {department} that {other} never paid."],
      "SELECT DISTINCT t.vendor FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' "
      "AND t.vendor IS NOT NULL AND t.vendor NOT IN (SELECT t.vendor FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE d.name = '{other}' AND t.vendor IS NOT NULL)", department=FIN_DEPT, other=FIN_DEPT),
    T("nested", ["How many transactions in {year} exceeded the average transaction amount of {year}?",
                 "Count the {year} transactions above that year's mean amount.",
                 "What is the number of {year} transactions larger than the {year} average?"],
      "SELECT COUNT(*) FROM transactions WHERE strftime('%Y', txn_date) = '{year}' "
      "AND amount > (SELECT AVG(amount) FROM transactions WHERE strftime('%Y', txn_date) = '{year}')", year=YEARS),
    # date
    T("date", ["How much was booked on {account_type} accounts in each month of {year}?",
               "Show the monthly {account_type} totals for {year}.", "For each month of {year}, sum the {account_type} transactions."],
      "SELECT strftime('%Y-%m', t.txn_date) AS month, ROUND(SUM(t.amount), 2) AS total_amount FROM transactions AS t "
      "JOIN accounts AS a ON t.account_id = a.account_id WHERE a.account_type = '{account_type}' "
      "AND strftime('%Y', t.txn_date) = '{year}' GROUP BY month ORDER BY month",
      account_type="SELECT DISTINCT account_type FROM accounts", year=YEARS),
    T("date", ["What did {department} spend between {start} and {end}?",
               "Sum {department}'s expenses from {start} to {end}.",
               "How much did the {department} department spend between {start} and {end}?"],
      "SELECT ROUND(SUM(t.amount), 2) FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id "
      "JOIN departments AS d ON a.department_id = d.department_id WHERE d.name = '{department}' "
      "AND a.account_type = 'expense' AND t.txn_date BETWEEN '{start}' AND '{end}'", department=FIN_DEPT, r=date_range),
    T("date", ["What was the total transaction amount in each calendar quarter of {year}?",
               "Show quarterly transaction totals for {year}.", "Break down {year} transaction amounts by calendar quarter."],
      "SELECT (CAST(strftime('%m', txn_date) AS INTEGER) + 2) / 3 AS quarter, ROUND(SUM(amount), 2) AS total_amount "
      "FROM transactions WHERE strftime('%Y', txn_date) = '{year}' GROUP BY quarter ORDER BY quarter", year=YEARS),
    T("date", ["How many transactions were booked in {month}?", "Count the transactions dated in {month}.",
               "What is the number of transactions in {month}?"],
      "SELECT COUNT(*) FROM transactions WHERE strftime('%Y-%m', txn_date) = '{ym}'", m=month),
    T("date", ["How many payments to {vendor} were made in {quarter}?", "Count {vendor} transactions during {quarter}.",
               "What is the number of {quarter} transactions with {vendor}?"],
      "SELECT COUNT(*) FROM transactions WHERE vendor = '{vendor}' AND txn_date BETWEEN '{q_start}' AND '{q_end}'",
      vendor=VENDOR, q=quarter),
    # percent
    T("percent", ["What share of {year} expenses did each department account for?",
                  "Show each department's {year} expenses and percentage of total expenses.",
                  "For {year}, what percent of all expenses came from each department?"],
      "SELECT d.name, ROUND(SUM(t.amount), 2) AS total_expense, ROUND(100.0 * SUM(t.amount) / (SELECT SUM(t.amount) "
      "FROM transactions AS t JOIN accounts AS a ON t.account_id = a.account_id WHERE a.account_type = 'expense' "
      "AND strftime('%Y', t.txn_date) = '{year}'), 2) AS pct_of_total FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE a.account_type = 'expense' AND strftime('%Y', t.txn_date) = '{year}' GROUP BY d.name", year=YEARS),
    T("percent", ["What percentage of transactions were taxed at {tax}?", "What share of transactions has a {tax} tax rate?",
                  "What percent of all transactions carry {tax} tax?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM transactions), 2) FROM transactions WHERE tax_rate = {tax}",
      tax=TAX),
    T("percent", ["What share of {year} vendor spending went to {vendor}?",
                  "What percentage of {year} payments to vendors went to {vendor}?",
                  "In {year}, what percent of vendor spend was with {vendor}?"],
      "SELECT ROUND(100.0 * SUM(amount) / (SELECT SUM(amount) FROM transactions WHERE vendor IS NOT NULL "
      "AND strftime('%Y', txn_date) = '{year}'), 2) FROM transactions WHERE vendor = '{vendor}' "
      "AND strftime('%Y', txn_date) = '{year}'", vendor=VENDOR, year=YEARS),
    T("percent", ["What percentage of {department}'s transactions exceeded {amount}?",
                  "What share of {department} transactions were above {amount}?",
                  "Among {department}'s transactions, what percent are larger than {amount}?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN t.amount > {amount} THEN 1 ELSE 0 END) / COUNT(*), 2) FROM transactions AS t "
      "JOIN accounts AS a ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE d.name = '{department}'", department=FIN_DEPT, amount=(1000, 5000, 10000, 20000)),
    # macro
    T("macro", ["What was the net amount (excluding tax) paid to {vendor} in {fq}?",
                "How much did we pay {vendor} before tax in fiscal quarter {fq}?",
                "Sum the net-of-tax transactions with {vendor} for {fq}."],
      "SELECT ROUND(SUM(net_amount(amount, tax_rate)), 2) FROM transactions WHERE vendor = '{vendor}' "
      "AND fiscal_quarter(txn_date) = '{fq}'", vendor=VENDOR, fq=FQ),
    T("macro", ["What were the budget and the actual spending of {account} in {fq}?",
                "Compare {account}'s {fq} budget with its actual transactions.",
                "Show budget versus actual for the {account} account in {fq}."],
      "SELECT b.amount AS budget, (SELECT ROUND(SUM(t.amount), 2) FROM transactions AS t WHERE t.account_id = a.account_id "
      "AND fiscal_quarter(t.txn_date) = b.fiscal_quarter) AS actual FROM budgets AS b JOIN accounts AS a "
      "ON b.account_id = a.account_id WHERE a.name = '{account}' AND b.fiscal_quarter = '{fq}'",
      account=ACCOUNT, fq="SELECT DISTINCT fiscal_quarter FROM budgets"),
    T("macro", ["Which accounts spent more than their budget in {fq}?", "List accounts over budget in fiscal quarter {fq}.",
                "Show the accounts whose {fq} transactions exceeded the budget."],
      "WITH actual AS (SELECT account_id, SUM(amount) AS total FROM transactions WHERE fiscal_quarter(txn_date) = '{fq}' "
      "GROUP BY account_id) SELECT a.name, b.amount AS budget, ROUND(x.total, 2) AS actual FROM accounts AS a "
      "JOIN budgets AS b ON a.account_id = b.account_id JOIN actual AS x ON a.account_id = x.account_id "
      "WHERE b.fiscal_quarter = '{fq}' AND x.total > b.amount", fq=FQ),
    T("macro", ["How many transactions were booked in each fiscal quarter of FY{fy}?",
                "Count the transactions per fiscal quarter in fiscal year {fy}.",
                "Show the number of transactions by fiscal quarter for FY{fy}."],
      "SELECT fiscal_quarter(txn_date) AS quarter, COUNT(*) AS txn_count FROM transactions "
      "WHERE fiscal_quarter(txn_date) LIKE 'FY{fy}-%' GROUP BY quarter ORDER BY quarter", fy=FY),
    T("macro", ["What was each department's net spending (excluding tax) in FY{fy}?",
                "Show net-of-tax expenses per department for fiscal year {fy}.",
                "For FY{fy}, how much did each department spend before tax?"],
      "SELECT d.name, ROUND(SUM(net_amount(t.amount, t.tax_rate)), 2) AS net_expense FROM transactions AS t "
      "JOIN accounts AS a ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE a.account_type = 'expense' AND fiscal_quarter(t.txn_date) LIKE 'FY{fy}-%' GROUP BY d.name", fy=FY),
    T("macro", ["What was the total tax paid on {department} expenses in {fq}?",
                "How much tax was included in {department}'s {fq} expenses?",
                "Compute the tax part of {department} expense transactions for {fq}."],
      "SELECT ROUND(SUM(t.amount - net_amount(t.amount, t.tax_rate)), 2) FROM transactions AS t JOIN accounts AS a "
      "ON t.account_id = a.account_id JOIN departments AS d ON a.department_id = d.department_id "
      "WHERE d.name = '{department}' AND a.account_type = 'expense' AND fiscal_quarter(t.txn_date) = '{fq}'",
      department=FIN_DEPT, fq=FQ),
]

# ------------------------------------------------------------------------------ support (held out)
# A ticket with a NULL closed_date is still open.

AGENT = "SELECT name FROM agents"
PRIORITY = "SELECT DISTINCT priority FROM tickets"
TICKET_CATEGORY = "SELECT DISTINCT category FROM tickets"
SUPPORT = [
    # simple
    T("simple", ["How many {priority}-priority {category} tickets are there?",
                 "Count the {category} tickets with {priority} priority.",
                 "What is the number of tickets in category {category} marked {priority}?"],
      "SELECT COUNT(*) FROM tickets WHERE priority = '{priority}' AND category = '{category}'",
      priority=PRIORITY, category=TICKET_CATEGORY),
    T("simple", ["Which customers from {country} are on the {plan} plan?", "List {plan}-plan customers in {country}.",
                 "Show the names of customers from {country} with a {plan} plan."],
      "SELECT name FROM customers WHERE country = '{country}' AND plan = '{plan}'",
      pair="SELECT DISTINCT country, plan FROM customers"),
    T("simple", ["Which agents work in the {team} team?", "List the agents of team {team}.",
                 "Show the names and hire dates of agents in {team}."],
      "SELECT name, hire_date FROM agents WHERE team = '{team}'", team="SELECT DISTINCT team FROM agents"),
    T("simple", ["How many {priority}-priority tickets are still open?", "Count the open {priority} tickets.",
                 "What is the number of {priority} tickets without a closed date?"],
      "SELECT COUNT(*) FROM tickets WHERE priority = '{priority}' AND closed_date IS NULL", priority=PRIORITY),
    # aggregate
    T("aggregate", ["How many tickets of each category were opened in {year}?", "Count the {year} tickets per category.",
                    "Show the number of tickets by category for {year}."],
      "SELECT category, COUNT(*) AS ticket_count FROM tickets WHERE strftime('%Y', opened_date) = '{year}' "
      "GROUP BY category", year=YEARS),
    T("aggregate", ["Which agents handled more than {n} tickets?", "List agents with over {n} tickets.",
                    "Show agents assigned more than {n} tickets, with their ticket counts."],
      "SELECT a.name, COUNT(*) AS ticket_count FROM tickets AS t JOIN agents AS a ON t.agent_id = a.agent_id "
      "GROUP BY a.name HAVING COUNT(*) > {n}", n=(50, 100, 150, 200, 300)),
    T("aggregate", ["How many customers are on each plan in {country}?", "Count customers per plan in {country}.",
                    "Show the plan breakdown of customers from {country}."],
      "SELECT plan, COUNT(*) AS customer_count FROM customers WHERE country = '{country}' GROUP BY plan",
      country="SELECT DISTINCT country FROM customers"),
    # topk
    T("topk", ["Which {k} agents handled the most tickets in {year}?", "List the top {k} agents by {year} ticket count.",
               "Who were the {k} busiest agents in {year}?"],
      "SELECT a.name, COUNT(*) AS ticket_count FROM tickets AS t JOIN agents AS a ON t.agent_id = a.agent_id "
      "WHERE strftime('%Y', t.opened_date) = '{year}' GROUP BY a.name ORDER BY ticket_count DESC LIMIT {k}",
      k=K, year=YEARS),
    T("topk", ["Which {k} customers opened the most {category} tickets?",
               "List the top {k} customers by number of {category} tickets.",
               "Who are the {k} customers with the most tickets about {category}?"],
      "SELECT c.name, COUNT(*) AS ticket_count FROM tickets AS t JOIN customers AS c ON t.customer_id = c.customer_id "
      "WHERE t.category = '{category}' GROUP BY c.name ORDER BY ticket_count DESC LIMIT {k}",
      k=K, category=TICKET_CATEGORY),
    T("topk", ["Which {k} countries raised the most tickets in {year}?", "List the top {k} countries by {year} tickets.",
               "What are the {k} countries with the highest ticket count in {year}?"],
      "SELECT c.country, COUNT(*) AS ticket_count FROM tickets AS t JOIN customers AS c ON t.customer_id = c.customer_id "
      "WHERE strftime('%Y', t.opened_date) = '{year}' GROUP BY c.country ORDER BY ticket_count DESC LIMIT {k}",
      k=K, year=YEARS),
    # join
    T("join", ["List the tickets opened by {customer}.", "Which tickets has {customer} raised?",
               "Show id, date, priority and category of every ticket from {customer}."],
      "SELECT t.ticket_id, t.opened_date, t.priority, t.category FROM tickets AS t JOIN customers AS c "
      "ON t.customer_id = c.customer_id WHERE c.name = '{customer}'", customer="SELECT name FROM customers"),
    T("join", ["Which tickets did {agent} handle in {month}?", "List {agent}'s tickets opened in {month}.",
               "Show the tickets assigned to {agent} that were opened in {month}."],
      "SELECT t.ticket_id, t.category FROM tickets AS t JOIN agents AS a ON t.agent_id = a.agent_id "
      "WHERE a.name = '{agent}' AND strftime('%Y-%m', t.opened_date) = '{ym}'", agent=AGENT, m=month),
    T("join", ["How many {category} tickets came from {plan}-plan customers?",
               "Count the {category} tickets raised by customers on the {plan} plan.",
               "What is the number of {category} tickets from {plan} customers?"],
      "SELECT COUNT(*) FROM tickets AS t JOIN customers AS c ON t.customer_id = c.customer_id "
      "WHERE t.category = '{category}' AND c.plan = '{plan}'", category=TICKET_CATEGORY,
      plan="SELECT DISTINCT plan FROM customers"),
    T("join", ["How many tickets handled by the {team} team were escalated?",
               "Count escalated tickets of agents in team {team}.",
               "What is the number of {team} tickets with an escalation event?"],
      "SELECT COUNT(DISTINCT t.ticket_id) FROM tickets AS t JOIN agents AS a ON t.agent_id = a.agent_id "
      "JOIN ticket_events AS ev ON t.ticket_id = ev.ticket_id WHERE a.team = '{team}' AND ev.event_type = 'escalated'",
      team="SELECT DISTINCT team FROM agents"),
    # nested
    T("nested", ["Which customers from {country} have never opened a ticket?",
                 "List {country} customers without any tickets.", "Show customers in {country} who never contacted support."],
      "SELECT name FROM customers WHERE country = '{country}' AND customer_id NOT IN (SELECT customer_id FROM tickets)",
      country="SELECT DISTINCT country FROM customers"),
    T("nested", ["Which agents never handled a {priority}-priority ticket in {year}?",
                 "List agents with no {priority} tickets during {year}.",
                 "Show the agents who were not assigned any {priority} ticket in {year}."],
      "SELECT name FROM agents WHERE agent_id NOT IN (SELECT agent_id FROM tickets WHERE priority = '{priority}' "
      "AND strftime('%Y', opened_date) = '{year}')", priority=PRIORITY, year=YEARS),
    T("nested", ["How many customers opened more than {n} tickets?", "Count the customers with over {n} tickets.",
                 "What is the number of customers who raised more than {n} tickets?"],
      "SELECT COUNT(*) FROM (SELECT customer_id FROM tickets GROUP BY customer_id HAVING COUNT(*) > {n})",
      n=(1, 3, 5, 10, 15, 20)),
    T("nested", ["Which tickets were reopened more than once?", "List tickets with more than one reopen event.",
                 "Show ids of tickets reopened at least twice."],
      "SELECT ticket_id FROM ticket_events WHERE event_type = 'reopened' GROUP BY ticket_id HAVING COUNT(*) > 1", target=1),
    # date
    T("date", ["How many tickets were opened in each month of {year}?", "Show the monthly ticket count for {year}.",
               "For each month of {year}, how many tickets were opened?"],
      "SELECT strftime('%Y-%m', opened_date) AS month, COUNT(*) AS ticket_count FROM tickets "
      "WHERE strftime('%Y', opened_date) = '{year}' GROUP BY month ORDER BY month", year=YEARS),
    T("date", ["How many {category} tickets were opened between {start} and {end}?",
               "Count {category} tickets opened from {start} to {end}.",
               "What is the number of {category} tickets with an open date between {start} and {end}?"],
      "SELECT COUNT(*) FROM tickets WHERE category = '{category}' AND opened_date BETWEEN '{start}' AND '{end}'",
      category=TICKET_CATEGORY, r=date_range),
    T("date", ["What is the average number of days to close a {priority}-priority ticket?",
               "On average, how many days does it take to close {priority} tickets?",
               "Compute the mean days between opening and closing for {priority} tickets."],
      "SELECT ROUND(AVG(julianday(closed_date) - julianday(opened_date)), 2) FROM tickets "
      "WHERE priority = '{priority}' AND closed_date IS NOT NULL", priority=PRIORITY),
    # percent
    T("percent", ["What share of tickets does each category account for?",
                  "Show the ticket count per category and its percentage of all tickets.",
                  "For each category, what percent of tickets belong to it?"],
      "SELECT category, COUNT(*) AS ticket_count, ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM tickets), 2) "
      "AS pct_of_total FROM tickets GROUP BY category", target=1),
    T("percent", ["What percentage of {priority}-priority tickets are still open?",
                  "What share of {priority} tickets has not been closed?",
                  "Among {priority} tickets, what percent are open?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN closed_date IS NULL THEN 1 ELSE 0 END) / COUNT(*), 2) FROM tickets "
      "WHERE priority = '{priority}'", priority=PRIORITY),
    T("percent", ["What percentage of {year} tickets came from {plan}-plan customers?",
                  "What share of tickets opened in {year} were raised by {plan} customers?",
                  "In {year}, what percent of tickets came from customers on the {plan} plan?"],
      "SELECT ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM tickets WHERE strftime('%Y', opened_date) = '{year}'), 2) "
      "FROM tickets AS t JOIN customers AS c ON t.customer_id = c.customer_id WHERE c.plan = '{plan}' "
      "AND strftime('%Y', t.opened_date) = '{year}'", plan="SELECT DISTINCT plan FROM customers", year=YEARS),
    # macro
    T("macro", ["How many {priority}-priority tickets were closed within their SLA?",
                "Count the {priority} tickets closed inside the SLA window.",
                "What is the number of {priority} tickets resolved within SLA business days?"],
      "SELECT COUNT(*) FROM tickets WHERE priority = '{priority}' AND closed_date IS NOT NULL "
      "AND business_days(opened_date, closed_date) <= sla_days(priority)", priority=PRIORITY),
    T("macro", ["What is the average resolution time in business days for tickets handled by {agent}?",
                "On average, how many working days does {agent} take to close a ticket?",
                "Compute {agent}'s mean business days to resolution."],
      "SELECT ROUND(AVG(business_days(t.opened_date, t.closed_date)), 2) FROM tickets AS t JOIN agents AS a "
      "ON t.agent_id = a.agent_id WHERE a.name = '{agent}' AND t.closed_date IS NOT NULL", agent=AGENT),
    T("macro", ["How many tickets opened in {month} breached their SLA?",
                "Count the {month} tickets closed later than their SLA allows.",
                "What is the number of SLA breaches among tickets opened in {month}?"],
      "SELECT COUNT(*) FROM tickets WHERE strftime('%Y-%m', opened_date) = '{ym}' AND closed_date IS NOT NULL "
      "AND business_days(opened_date, closed_date) > sla_days(priority)", m=month),
    T("macro", ["What percentage of {category} tickets were resolved within SLA?",
                "What share of closed {category} tickets met the SLA?",
                "Among closed {category} tickets, what percent were closed within their SLA?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN business_days(opened_date, closed_date) <= sla_days(priority) THEN 1 ELSE 0 END) "
      "/ COUNT(*), 2) FROM tickets WHERE category = '{category}' AND closed_date IS NOT NULL", category=TICKET_CATEGORY),
]

# ------------------------------------------------------------------------------- clinic (held out)

DOCTOR = "SELECT name FROM doctors"
SPECIALTY = "SELECT DISTINCT specialty FROM doctors"
CLINIC = [
    # simple
    T("simple", ["How many {gender_word} patients live in {city}?", "Count the {gender_word} patients from {city}.",
                 "What is the number of {gender_word} patients based in {city}?"],
      "SELECT COUNT(*) FROM patients WHERE gender = '{gender}' AND city = '{city}'",
      city="SELECT DISTINCT city FROM patients",
      gender=lambda rng: rng.choice(({"gender": "F", "gender_word": "female"}, {"gender": "M", "gender_word": "male"}))),
    T("simple", ["Which doctors specialize in {specialty}?", "List the {specialty} doctors.",
                 "Show the names of doctors whose specialty is {specialty}."],
      "SELECT name FROM doctors WHERE specialty = '{specialty}'", specialty=SPECIALTY),
    T("simple", ["How many {status} appointments had a fee above {fee}?", "Count {status} appointments costing over {fee}.",
                 "What is the number of appointments with status '{status}' and a fee greater than {fee}?"],
      "SELECT COUNT(*) FROM appointments WHERE status = '{status}' AND fee > {fee}",
      status="SELECT DISTINCT status FROM appointments", fee=(50, 100, 150, 200, 250)),
    T("simple", ["Which prescriptions of {medication} last {days} days or more?",
                 "List {medication} prescriptions with a duration of at least {days} days.",
                 "Show the {medication} prescriptions running {days}+ days."],
      "SELECT prescription_id, dosage_mg, days FROM prescriptions WHERE medication = '{medication}' AND days >= {days}",
      medication="SELECT DISTINCT medication FROM prescriptions", days=(14, 30, 90)),
    # aggregate
    T("aggregate", ["How many appointments of each status were there in {year}?",
                    "Count the {year} appointments by status.", "Show the number of appointments per status for {year}."],
      "SELECT status, COUNT(*) AS appointment_count FROM appointments WHERE strftime('%Y', appointment_date) = '{year}' "
      "GROUP BY status", year=YEARS),
    T("aggregate", ["What is the average appointment fee per specialty?", "Show the mean fee for each specialty.",
                    "For every specialty, what does an appointment cost on average?"],
      "SELECT d.specialty, ROUND(AVG(a.fee), 2) AS avg_fee FROM appointments AS a JOIN doctors AS d "
      "ON a.doctor_id = d.doctor_id GROUP BY d.specialty", target=1),
    T("aggregate", ["Which cities have more than {n} patients?", "List cities with over {n} patients.",
                    "Show cities where more than {n} patients live, with counts."],
      "SELECT city, COUNT(*) AS patient_count FROM patients GROUP BY city HAVING COUNT(*) > {n}", n=(50, 60, 65, 70, 80)),
    # topk
    T("topk", ["Which {k} doctors had the most completed appointments in {year}?",
               "List the top {k} doctors by completed appointments in {year}.",
               "Who were the {k} busiest doctors (completed visits) in {year}?"],
      "SELECT d.name, COUNT(*) AS appointment_count FROM appointments AS a JOIN doctors AS d ON a.doctor_id = d.doctor_id "
      "WHERE a.status = 'completed' AND strftime('%Y', a.appointment_date) = '{year}' GROUP BY d.name "
      "ORDER BY appointment_count DESC LIMIT {k}", k=K, year=YEARS),
    T("topk", ["Which {k} medications are prescribed most often?", "List the top {k} medications by prescription count.",
               "What are the {k} most frequently prescribed medications?"],
      "SELECT medication, COUNT(*) AS prescription_count FROM prescriptions GROUP BY medication "
      "ORDER BY prescription_count DESC LIMIT {k}", k=K),
    T("topk", ["Which {k} patients spent the most on appointments in {year}?",
               "List the top {k} patients by total fees in {year}.", "Who are the {k} patients with the highest {year} fees?"],
      "SELECT p.name, ROUND(SUM(a.fee), 2) AS total_fees FROM appointments AS a JOIN patients AS p "
      "ON a.patient_id = p.patient_id WHERE strftime('%Y', a.appointment_date) = '{year}' GROUP BY p.name "
      "ORDER BY total_fees DESC LIMIT {k}", k=K, year=YEARS),
    # join
    T("join", ["Which medications were prescribed to {patient}?", "List the medications {patient} has been given.",
               "Show every medication prescribed to {patient}."],
      "SELECT DISTINCT rx.medication FROM prescriptions AS rx JOIN appointments AS a ON rx.appointment_id = a.appointment_id "
      "JOIN patients AS p ON a.patient_id = p.patient_id WHERE p.name = '{patient}'", patient="SELECT name FROM patients"),
    T("join", ["Which patients did {doctor} see in {month}?", "List the patients with appointments with {doctor} in {month}.",
               "Show the names of {doctor}'s patients in {month}."],
      "SELECT DISTINCT p.name FROM patients AS p JOIN appointments AS a ON p.patient_id = a.patient_id "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.name = '{doctor}' "
      "AND strftime('%Y-%m', a.appointment_date) = '{ym}'", doctor=DOCTOR, m=month),
    T("join", ["How many {medication} prescriptions were written by {specialty} doctors?",
               "Count the {medication} prescriptions from {specialty} specialists.",
               "What is the number of {medication} prescriptions issued in {specialty}?"],
      "SELECT COUNT(*) FROM prescriptions AS rx JOIN appointments AS a ON rx.appointment_id = a.appointment_id "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE rx.medication = '{medication}' AND d.specialty = '{specialty}'",
      medication="SELECT DISTINCT medication FROM prescriptions", specialty=SPECIALTY),
    T("join", ["What fees did patients from {city} pay to {specialty} doctors in {year}?",
               "Sum {year} appointment fees of {city} patients in {specialty}.",
               "How much did {city} patients spend on {specialty} visits in {year}?"],
      "SELECT ROUND(SUM(a.fee), 2) FROM appointments AS a JOIN patients AS p ON a.patient_id = p.patient_id "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE p.city = '{city}' AND d.specialty = '{specialty}' "
      "AND strftime('%Y', a.appointment_date) = '{year}'",
      city="SELECT DISTINCT city FROM patients", specialty=SPECIALTY, year=YEARS),
    # nested
    T("nested", ["Which patients from {city} have never had an appointment?",
                 "List {city} patients without any appointment.", "Show patients in {city} who never visited."],
      "SELECT name FROM patients WHERE city = '{city}' AND patient_id NOT IN (SELECT patient_id FROM appointments)",
      city="SELECT DISTINCT city FROM patients"),
    T("nested", ["Which doctors had no appointments in {month}?", "List doctors without appointments in {month}.",
                 "Show the doctors who saw nobody in {month}."],
      "SELECT name FROM doctors WHERE doctor_id NOT IN "
      "(SELECT doctor_id FROM appointments WHERE strftime('%Y-%m', appointment_date) = '{ym}')", m=month),
    T("nested", ["Which {specialty} appointments in {year} cost more than the average fee of {specialty}?",
                 "List {year} {specialty} appointments priced above the {specialty} average.",
                 "Show {specialty} visits from {year} with an above-average fee for that specialty."],
      "SELECT a.appointment_id, a.fee FROM appointments AS a JOIN doctors AS d ON a.doctor_id = d.doctor_id "
      "WHERE d.specialty = '{specialty}' AND strftime('%Y', a.appointment_date) = '{year}' AND a.fee > "
      "(SELECT AVG(a.fee) FROM appointments AS a JOIN doctors AS d ON a.doctor_id = d.doctor_id "
      "WHERE d.specialty = '{specialty}')", specialty=SPECIALTY, year=YEARS),
    T("nested", ["How many patients had more than {n} appointments?", "Count the patients with over {n} appointments.",
                 "What is the number of patients who visited more than {n} times?"],
      "SELECT COUNT(*) FROM (SELECT patient_id FROM appointments GROUP BY patient_id HAVING COUNT(*) > {n})",
      n=(1, 2, 3, 5, 8, 10)),
    # date
    T("date", ["How many appointments took place in {month}?", "Count the appointments in {month}.",
               "What is the number of appointments dated {month}?"],
      "SELECT COUNT(*) FROM appointments WHERE strftime('%Y-%m', appointment_date) = '{ym}'", m=month),
    T("date", ["How many {specialty} appointments were there in each month of {year}?",
               "Show the monthly number of {specialty} appointments in {year}.",
               "For each month of {year}, count the {specialty} appointments."],
      "SELECT strftime('%Y-%m', a.appointment_date) AS month, COUNT(*) AS appointment_count FROM appointments AS a "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.specialty = '{specialty}' "
      "AND strftime('%Y', a.appointment_date) = '{year}' GROUP BY month ORDER BY month", specialty=SPECIALTY, year=YEARS),
    T("date", ["How many patients born between {start} and {end} live in {city}?",
               "Count {city} patients with a birth date from {start} to {end}.",
               "What is the number of patients in {city} born between {start} and {end}?"],
      "SELECT COUNT(*) FROM patients WHERE city = '{city}' AND birth_date BETWEEN '{start}' AND '{end}'",
      city="SELECT DISTINCT city FROM patients",
      r=lambda rng: (lambda y: {"start": f"{y}-01-01", "end": f"{y + rng.choice((4, 9, 19))}-12-31"})(rng.randrange(1940, 2015, 5))),
    # percent
    T("percent", ["What share of appointments does each specialty account for?",
                  "Show appointments per specialty with their percentage of all appointments.",
                  "For each specialty, what percent of appointments are with it?"],
      "SELECT d.specialty, COUNT(*) AS appointment_count, ROUND(100.0 * COUNT(*) / (SELECT COUNT(*) FROM appointments), 2) "
      "AS pct_of_total FROM appointments AS a JOIN doctors AS d ON a.doctor_id = d.doctor_id GROUP BY d.specialty", target=1),
    T("percent", ["What percentage of {doctor}'s appointments were no-shows?",
                  "What share of appointments with {doctor} ended as no-show?",
                  "Among {doctor}'s appointments, what percent were missed (no-show)?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN a.status = 'no-show' THEN 1 ELSE 0 END) / COUNT(*), 2) FROM appointments AS a "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.name = '{doctor}'", doctor=DOCTOR),
    T("percent", ["What percentage of {year} fees came from {specialty}?",
                  "What share of appointment revenue in {year} did {specialty} bring in?",
                  "In {year}, what percent of all fees were for {specialty} visits?"],
      "SELECT ROUND(100.0 * SUM(a.fee) / (SELECT SUM(fee) FROM appointments WHERE strftime('%Y', appointment_date) = '{year}'), 2) "
      "FROM appointments AS a JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.specialty = '{specialty}' "
      "AND strftime('%Y', a.appointment_date) = '{year}'", specialty=SPECIALTY, year=YEARS),
    # macro
    T("macro", ["How many appointments did {specialty} doctors have in each fiscal quarter of FY{fy}?",
                "Count {specialty} appointments per fiscal quarter in fiscal year {fy}.",
                "Show the number of {specialty} visits by fiscal quarter for FY{fy}."],
      "SELECT fiscal_quarter(a.appointment_date) AS quarter, COUNT(*) AS appointment_count FROM appointments AS a "
      "JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.specialty = '{specialty}' "
      "AND fiscal_quarter(a.appointment_date) LIKE 'FY{fy}-%' GROUP BY quarter ORDER BY quarter", specialty=SPECIALTY,
      fy=FY),
    T("macro", ["What was the average age of {doctor}'s patients at their appointments?",
                "On average, how old were patients when they saw {doctor}?",
                "Compute the mean patient age at visits with {doctor}."],
      "SELECT ROUND(AVG(age_years(p.birth_date, a.appointment_date)), 2) FROM appointments AS a JOIN patients AS p "
      "ON a.patient_id = p.patient_id JOIN doctors AS d ON a.doctor_id = d.doctor_id WHERE d.name = '{doctor}'",
      doctor=DOCTOR),
    T("macro", ["How many patients were under {age} at an appointment in {fq}?",
                "Count the distinct patients younger than {age} seen in fiscal quarter {fq}.",
                "What is the number of patients aged below {age} with an appointment in {fq}?"],
      "SELECT COUNT(DISTINCT a.patient_id) FROM appointments AS a JOIN patients AS p ON a.patient_id = p.patient_id "
      "WHERE fiscal_quarter(a.appointment_date) = '{fq}' AND age_years(p.birth_date, a.appointment_date) < {age}",
      age=(12, 18, 30, 40), fq="SELECT DISTINCT fiscal_quarter(appointment_date) FROM appointments"),
    T("macro", ["What were the total completed-appointment fees in fiscal quarter {fq}?",
                "How much was earned from completed appointments in {fq}?",
                "Sum the fees of completed appointments during {fq}."],
      "SELECT ROUND(SUM(fee), 2) FROM appointments WHERE status = 'completed' AND fiscal_quarter(appointment_date) = '{fq}'",
      fq="SELECT DISTINCT fiscal_quarter(appointment_date) FROM appointments"),
]

TEMPLATES = {"sales": SALES, "hotels": HOTELS, "hr": HR, "logistics": LOGISTICS, "finance": FINANCE,
             "support": SUPPORT, "clinic": CLINIC, "warehouse": WAREHOUSE_TEMPLATES}
