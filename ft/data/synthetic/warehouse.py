"""The bundled enterprise warehouse: 170+ tables over 16 subject areas, for schema linking.

Unlike the other bundled databases (a handful of tables each, compact DDL), this one is laid out the way a real
warehouse is: area prefixes (`sales_`, `fin_`, `hr_`, `log_`, `sup_`, `mkt_`, `mfg_`, ...), shared dimensions
(`geo_country`, `core_currency`, ...), audit columns, column comments, foreign keys everywhere, and its full DDL is
over 20,000 tokens: more than a small model's context, so a question can only be answered from a linked (pruned)
schema (ft/data/linking.py). Its questions cover every tier and join across areas.

Tables are declared in a small text format, one column a line:

    @sales_order 2500 | one row per customer order
    order_id pk
    customer_id fk:sales_customer
    order_date DATE date
    status VARCHAR(16) pick:delivered*70|shipped*10|cancelled*12|returned*8 -- order lifecycle state

`name TYPE generator [-- comment]`; generators: pk, fk:TABLE[?p] (p: share of NULLs), list:a|b (row i gets item
i; the row count is the list's length), pick:a*w|b*w (weighted), int:a..b, money:a..b, real:a..b, date[:Y1..Y2],
after:COL:a..b (COL's date + a..b days), ts, person, company, product, code:PFX, email:COL, flag:p, copy:FKCOL.COL
(the referenced row's column), city, const:v; any generator may end in ?p. `audit` adds created_at / updated_at.
Tables come after the tables they reference; rows are drawn with seeded `random`, so a seed gives the same file.
"""
# ruff: noqa: E501 - the table spec and the question templates are data (as in templates.py): a value list or a
# phrasing per line reads better than one cut mid-list.
from __future__ import annotations

import bisect
import itertools
import random
import re
import sqlite3
from datetime import date, timedelta

from .questions import YEARS, K, T, date_range, month, quarter

SPEC = r"""
# ------------------------------------------------------------------------------------ core / shared dimensions
@core_currency * | ISO currencies used for prices, invoices and payments
currency_code VARCHAR(3) list:USD|EUR|GBP|JPY|CAD|AUD|CHF|SEK|BRL|MXN|SGD -- ISO 4217 code
currency_name VARCHAR(40) list:US Dollar|Euro|Pound Sterling|Japanese Yen|Canadian Dollar|Australian Dollar|Swiss Franc|Swedish Krona|Brazilian Real|Mexican Peso|Singapore Dollar
decimals INTEGER list:2|2|2|0|2|2|2|2|2|2|2

@geo_region * | sales and reporting regions
region_id pk
region_name VARCHAR(40) list:North America|Latin America|Western Europe|Northern Europe|Southern Europe|Asia Pacific
region_code VARCHAR(8) list:NA|LATAM|WEU|NEU|SEU|APAC

@geo_country * | countries the company sells to or operates in
country_id pk
country_code VARCHAR(2) list:US|CA|MX|BR|GB|IE|FR|DE|NL|CH|SE|ES|IT|JP|AU|SG -- ISO 3166-1 alpha-2
country_name VARCHAR(60) list:United States|Canada|Mexico|Brazil|United Kingdom|Ireland|France|Germany|Netherlands|Switzerland|Sweden|Spain|Italy|Japan|Australia|Singapore
region_id fk:geo_region list:1|1|2|2|3|3|3|3|3|3|4|5|5|6|6|6
currency_code VARCHAR(3) list:USD|CAD|MXN|BRL|GBP|EUR|EUR|EUR|EUR|CHF|SEK|EUR|EUR|JPY|AUD|SGD

@geo_city * | cities with customers, sites or warehouses
city_id pk
city_name VARCHAR(60) list:New York|Chicago|Austin|Seattle|Boston|Toronto|Vancouver|Mexico City|Sao Paulo|London|Manchester|Dublin|Paris|Lyon|Berlin|Munich|Hamburg|Amsterdam|Zurich|Stockholm|Madrid|Barcelona|Rome|Milan|Tokyo|Osaka|Sydney|Melbourne|Singapore
country_id fk:geo_country list:1|1|1|1|1|2|2|3|4|5|5|6|7|7|8|8|8|9|10|11|12|12|13|13|14|14|15|15|16
population INTEGER int:200000..9000000
timezone VARCHAR(40) pick:UTC-5|UTC-6|UTC-8|UTC+0|UTC+1|UTC+9|UTC+10|UTC+8

@core_exchange_rate 396 | monthly average exchange rate of each currency to USD
rate_id pk
currency_code VARCHAR(3) pick:EUR|GBP|JPY|CAD|AUD|CHF|SEK|BRL|MXN|SGD
rate_month VARCHAR(7) pick:2022-01|2022-06|2023-01|2023-06|2024-01|2024-06 -- 'YYYY-MM'
usd_rate REAL real:0.005..1.4 -- USD per unit of the currency

@core_legal_entity * | companies of the group that sign contracts and issue invoices
entity_id pk
entity_name VARCHAR(80) list:Northwind Holdings Inc.|Northwind Europe GmbH|Northwind UK Ltd|Northwind Japan KK|Northwind Australia Pty|Northwind Brasil Ltda
country_id fk:geo_country list:1|8|5|14|15|4
tax_number VARCHAR(20) code:TAX
incorporated_on DATE date:2001..2015

@core_business_unit * | business units that own budgets and P&L
business_unit_id pk
unit_name VARCHAR(60) list:Consumer Electronics|Home and Living|Office Solutions|Outdoor and Sports|Services|Corporate
entity_id fk:core_legal_entity list:1|2|1|3|1|1
head_count_target INTEGER int:40..400

@core_calendar 1096 | one row per calendar day, 2022-2024
date_key INTEGER pk
calendar_date DATE seqdate
day_of_week VARCHAR(9) weekday:calendar_date
is_holiday BOOLEAN flag:0.03
fiscal_year INTEGER fy:calendar_date -- fiscal years start on 1 April and are named after the year they start in

# -------------------------------------------------------------------------------------------------- products
@prod_category * | top-level product categories
category_id pk
category_name VARCHAR(40) list:Electronics|Furniture|Office Supplies|Kitchen|Sports|Toys|Books|Garden
business_unit_id fk:core_business_unit list:1|2|3|2|4|4|3|2

@prod_subcategory 32 | product subcategories
subcategory_id pk
category_id fk:prod_category
subcategory_name VARCHAR(60) subcat
is_seasonal BOOLEAN flag:0.2

@prod_brand * | brands the company sells
brand_id pk
brand_name VARCHAR(40) list:Nova|Apex|Zenith|Orbit|Vista|Pulse|Terra|Luma|Echo|Summit|Polar|Aurora
is_private_label BOOLEAN list:1|0|0|1|0|0|0|1|0|0|0|0 -- 1 for the company's own brands

@prod_product 240 | sellable products (one row per product, variants in prod_product_variant)
product_id pk
sku VARCHAR(20) code:SKU
product_name VARCHAR(80) product
subcategory_id fk:prod_subcategory
brand_id fk:prod_brand
list_price DECIMAL(12,2) money:4..1500 -- current list price in USD
standard_cost DECIMAL(12,2) money:2..900
launch_date DATE date:2018..2024
is_discontinued BOOLEAN flag:0.08
audit

@prod_product_variant 420 | sizes and colours of a product
variant_id pk
product_id fk:prod_product
color VARCHAR(20) pick:Black|White|Silver|Blue|Red|Green|Grey
size_label VARCHAR(10) pick:S|M|L|XL|One Size
barcode VARCHAR(20) code:EAN

@prod_price_history 700 | list price changes of products
price_change_id pk
product_id fk:prod_product
effective_date DATE date
old_price DECIMAL(12,2) money:4..1500
new_price DECIMAL(12,2) money:4..1500
reason VARCHAR(40) pick:annual review|promotion|cost increase|competitor match

@prod_attribute * | product attributes shown in the catalogue
attribute_id pk
attribute_name VARCHAR(40) list:Weight|Material|Warranty Years|Power Rating|Energy Class|Origin Country|Battery Life|Water Resistance
unit VARCHAR(10) list:kg|text|years|W|class|text|hours|m

@prod_product_attribute 900 | attribute values of products
product_attribute_id pk
product_id fk:prod_product
attribute_id fk:prod_attribute
attribute_value VARCHAR(40) pick:Steel|Oak|Plastic|Aluminium|A|B|C|2|3|5|Germany|China|Italy|USA

@prod_review 1500 | customer product reviews from the web shop
review_id pk
product_id fk:prod_product
rating INTEGER pick:1*1|2*1|3*3|4*6|5*6 -- 1 to 5 stars
review_date DATE date
is_verified_purchase BOOLEAN flag:0.7

@prod_bundle_item 60 | products sold together as a bundle
bundle_item_id pk
bundle_product_id fk:prod_product
component_product_id fk:prod_product
quantity INTEGER int:1..4

# ----------------------------------------------------------------------------------------------------- sales
@sales_channel * | channels through which orders arrive
channel_id pk
channel_name VARCHAR(30) list:Online Store|Retail Store|Phone Sales|Marketplace|Field Sales|Partner Reseller
is_digital BOOLEAN list:1|0|0|1|0|0

@sales_territory * | sales territories assigned to reps
territory_id pk
territory_name VARCHAR(40) list:US East|US West|US Central|Canada|LATAM|UK and Ireland|DACH|France and Benelux|Nordics|Iberia|Italy|Japan|ANZ|Southeast Asia
region_id fk:geo_region list:1|1|1|1|2|3|3|3|4|5|5|6|6|6

@sales_rep 60 | sales representatives (each is also an employee in HR)
sales_rep_id pk
rep_name VARCHAR(80) person
territory_id fk:sales_territory
hire_date DATE date:2015..2024
quota_amount DECIMAL(12,2) money:200000..2000000 -- yearly quota in USD
is_active BOOLEAN flag:0.9

@sales_store 24 | physical retail stores
store_id pk
store_name VARCHAR(60) store
city_id fk:geo_city
opened_on DATE date:2010..2023
floor_area_m2 INTEGER int:300..4000

@sales_customer 900 | customer accounts (consumers and businesses)
customer_id pk
customer_name VARCHAR(100) person
customer_type VARCHAR(12) pick:consumer*6|business*3|government*1
segment VARCHAR(20) pick:Consumer*6|Corporate*3|Small Business*2
city_id fk:geo_city
email VARCHAR(120) email:customer_name
signup_date DATE date:2019..2024
credit_limit DECIMAL(12,2) money:500..50000
audit

@sales_customer_address 1100 | billing and shipping addresses of customers
address_id pk
customer_id fk:sales_customer
address_type VARCHAR(10) pick:billing|shipping
street VARCHAR(120) street
postal_code VARCHAR(12) code:PC
city_id fk:geo_city

@sales_customer_contact 700 | people to contact at business customers
contact_id pk
customer_id fk:sales_customer
contact_name VARCHAR(80) person
job_title VARCHAR(60) pick:Buyer|Procurement Manager|Office Manager|CFO|IT Director|Owner
phone VARCHAR(30) phone

@sales_promotion * | price promotions and discount campaigns
promotion_id pk
promotion_name VARCHAR(60) list:Spring Sale|Summer Clearance|Back to School|Black Friday|Cyber Monday|Holiday Deals|New Year Offer|Loyalty Week|Flash Friday|Bundle Bonanza
discount_pct REAL list:0.1|0.2|0.15|0.3|0.25|0.2|0.1|0.05|0.35|0.15 -- fraction, 0.1 = 10%
start_date DATE date
end_date DATE after:start_date:7..30

@sales_order 3000 | one row per customer order
order_id pk
order_number VARCHAR(20) code:SO
customer_id fk:sales_customer
channel_id fk:sales_channel
store_id fk:sales_store?0.6 -- NULL unless the order was placed in a store
sales_rep_id fk:sales_rep?0.3
order_date DATE date
status VARCHAR(16) pick:delivered*70|shipped*10|cancelled*12|returned*8 -- order lifecycle state
currency_code VARCHAR(3) pick:USD*6|EUR*3|GBP*1
total_amount DECIMAL(12,2) money:15..6000 -- order total in USD, tax included
audit

@sales_order_line 7500 | order lines: one product per line
order_line_id pk
order_id fk:sales_order
product_id fk:prod_product
quantity INTEGER pick:1*8|2*4|3*2|5*1|10*1
unit_price DECIMAL(12,2) copy:product_id.list_price
discount REAL pick:0*10|0.05*3|0.1*3|0.15*1|0.2*1 -- fraction of the line price
promotion_id fk:sales_promotion?0.8

@sales_return 320 | customer returns (one row per returned order)
return_id pk
order_id fk:sales_order
return_date DATE date
reason VARCHAR(40) pick:damaged|wrong item|not as described|changed mind|late delivery
refund_amount DECIMAL(12,2) money:5..2000

@sales_return_line 520 | returned products of a return
return_line_id pk
return_id fk:sales_return
product_id fk:prod_product
quantity INTEGER pick:1*6|2*2|3*1
condition VARCHAR(16) pick:resellable|damaged|destroyed

@sales_quote 600 | price quotes sent to business customers
quote_id pk
customer_id fk:sales_customer
sales_rep_id fk:sales_rep
quote_date DATE date
valid_until DATE after:quote_date:14..60
status VARCHAR(12) pick:accepted|rejected|expired|open
quote_amount DECIMAL(12,2) money:500..80000

@sales_quote_line 1400 | lines of a quote
quote_line_id pk
quote_id fk:sales_quote
product_id fk:prod_product
quantity INTEGER int:1..50
quoted_price DECIMAL(12,2) copy:product_id.list_price

@sales_target 168 | monthly revenue targets per territory
target_id pk
territory_id fk:sales_territory
target_month VARCHAR(7) pick:2023-01|2023-04|2023-07|2023-10|2024-01|2024-04|2024-07|2024-10
target_amount DECIMAL(12,2) money:50000..900000

@sales_commission 900 | commissions earned by reps on orders
commission_id pk
sales_rep_id fk:sales_rep
order_id fk:sales_order
commission_amount DECIMAL(12,2) money:5..600
paid_date DATE date?0.2

# --------------------------------------------------------------------------------------------------- finance
@fin_account * | general ledger accounts (chart of accounts)
account_id pk
account_number VARCHAR(10) list:1000|1100|1200|1500|2000|2100|2300|3000|4000|4100|4200|5000|5100|6000|6100|6200|6300|6400|6500|6600|6700|6800
account_name VARCHAR(60) list:Cash|Accounts Receivable|Inventory|Fixed Assets|Accounts Payable|Accrued Liabilities|Taxes Payable|Retained Earnings|Product Revenue|Service Revenue|Other Income|Cost of Goods Sold|Freight Costs|Salaries|Rent|Utilities|Travel|Software|Marketing|Consulting|Insurance|Depreciation
account_type VARCHAR(12) list:asset|asset|asset|asset|liability|liability|liability|equity|revenue|revenue|revenue|expense|expense|expense|expense|expense|expense|expense|expense|expense|expense|expense

@fin_cost_center 30 | cost centers expenses are booked to
cost_center_id pk
cost_center_code VARCHAR(10) code:CC
cost_center_name VARCHAR(60) costcenter
business_unit_id fk:core_business_unit
manager_name VARCHAR(80) person

@fin_fiscal_period 48 | accounting periods (fiscal months)
period_id pk
fiscal_year INTEGER pick:2021|2022|2023|2024
period_number INTEGER int:1..12
period_start DATE date
is_closed BOOLEAN flag:0.8

@fin_journal_entry 1800 | journal entries posted to the general ledger
journal_entry_id pk
entry_number VARCHAR(20) code:JE
entry_date DATE date
period_id fk:fin_fiscal_period
source VARCHAR(16) pick:sales|purchasing|payroll|manual|depreciation
description VARCHAR(120) pick:monthly accrual|invoice posting|payroll run|asset depreciation|bank fees|reclassification
audit

@fin_journal_line 4800 | debit and credit lines of journal entries
journal_line_id pk
journal_entry_id fk:fin_journal_entry
account_id fk:fin_account
cost_center_id fk:fin_cost_center?0.3
debit_amount DECIMAL(14,2) money:10..50000
credit_amount DECIMAL(14,2) money:10..50000

@fin_tax_code * | sales and purchase tax codes
tax_code_id pk
tax_code VARCHAR(10) list:US-EXEMPT|US-STD|EU-STD|EU-RED|UK-STD|JP-STD|AU-GST|CH-STD
tax_rate REAL list:0|0.07|0.2|0.1|0.2|0.1|0.1|0.077 -- fraction, 0.2 = 20%

@fin_invoice 2400 | invoices issued to customers (accounts receivable)
invoice_id pk
invoice_number VARCHAR(20) code:INV
customer_id fk:sales_customer
order_id fk:sales_order?0.1
entity_id fk:core_legal_entity
invoice_date DATE date
due_date DATE after:invoice_date:14..60
paid_date DATE after:invoice_date:0..90?0.15 -- NULL while unpaid
amount DECIMAL(12,2) money:20..9000 -- invoice total, tax included
tax_code_id fk:fin_tax_code
status VARCHAR(12) pick:paid*8|open*2|void*1
audit

@fin_invoice_line 5200 | lines of customer invoices
invoice_line_id pk
invoice_id fk:fin_invoice
product_id fk:prod_product?0.1
line_description VARCHAR(120) pick:product sale|installation|extended warranty|shipping|service fee
quantity INTEGER int:1..10
line_amount DECIMAL(12,2) money:5..4000

@fin_payment 2100 | payments received from customers
payment_id pk
customer_id fk:sales_customer
payment_date DATE date
amount DECIMAL(12,2) money:20..9000
method VARCHAR(16) pick:card*5|bank transfer*4|paypal*2|check*1
currency_code VARCHAR(3) pick:USD*6|EUR*3|GBP*1

@fin_payment_allocation 2300 | how payments are applied to invoices
allocation_id pk
payment_id fk:fin_payment
invoice_id fk:fin_invoice
allocated_amount DECIMAL(12,2) money:10..9000

@fin_vendor 120 | vendors the company buys services and goods from
vendor_id pk
vendor_name VARCHAR(100) company
country_id fk:geo_country
payment_terms_days INTEGER pick:15|30|45|60
is_preferred BOOLEAN flag:0.25

@fin_vendor_invoice 1600 | invoices received from vendors (accounts payable)
vendor_invoice_id pk
vendor_id fk:fin_vendor
invoice_date DATE date
due_date DATE after:invoice_date:15..60
gross_amount DECIMAL(12,2) money:50..40000 -- tax included
tax_rate REAL pick:0*3|0.07*2|0.1*2|0.2*3 -- fraction, 0.2 = 20%
cost_center_id fk:fin_cost_center
status VARCHAR(12) pick:paid*7|approved*2|disputed*1

@fin_vendor_payment 1400 | payments made to vendors
vendor_payment_id pk
vendor_invoice_id fk:fin_vendor_invoice
payment_date DATE date
amount DECIMAL(12,2) money:50..40000
bank_account_id INTEGER int:1..6

@fin_budget 720 | budget per cost center, account and fiscal quarter
budget_id pk
cost_center_id fk:fin_cost_center
account_id fk:fin_account
fiscal_quarter VARCHAR(10) pick:FY2022-Q1|FY2022-Q2|FY2022-Q3|FY2022-Q4|FY2023-Q1|FY2023-Q2|FY2023-Q3|FY2023-Q4 -- 'FY2023-Q1'
budget_amount DECIMAL(14,2) money:1000..250000

@fin_bank_account * | the company's bank accounts
bank_account_id pk
bank_name VARCHAR(60) list:First National Bank|Deutsche Handelsbank|Barclays Business|Mizuho Corporate|Westpac Business|Banco Central
iban VARCHAR(34) code:IBAN
currency_code VARCHAR(3) list:USD|EUR|GBP|JPY|AUD|BRL
entity_id fk:core_legal_entity list:1|2|3|4|5|6

@fin_bank_transaction 2600 | bank statement lines
bank_transaction_id pk
bank_account_id fk:fin_bank_account
booking_date DATE date
amount DECIMAL(14,2) money:5..60000
direction VARCHAR(6) pick:in|out
counterparty VARCHAR(100) company
is_reconciled BOOLEAN flag:0.85

@fin_fixed_asset 260 | fixed assets on the balance sheet
asset_id pk
asset_tag VARCHAR(20) code:FA
description VARCHAR(100) pick:delivery van|forklift|server rack|office furniture|laptop fleet|packaging machine|solar panels
acquisition_date DATE date:2015..2024
acquisition_cost DECIMAL(14,2) money:1000..250000
useful_life_years INTEGER pick:3|5|7|10
cost_center_id fk:fin_cost_center

@fin_depreciation_entry 1500 | monthly depreciation of fixed assets
depreciation_id pk
asset_id fk:fin_fixed_asset
period_month VARCHAR(7) pick:2023-01|2023-04|2023-07|2023-10|2024-01|2024-04|2024-07|2024-10
depreciation_amount DECIMAL(12,2) money:10..6000

# -------------------------------------------------------------------------------------------------------- hr
@hr_department * | organisational departments
department_id pk
department_name VARCHAR(60) list:Engineering|Sales|Marketing|Finance|Human Resources|Operations|Customer Support|Legal|Logistics|Manufacturing|IT|Procurement
business_unit_id fk:core_business_unit list:6|1|6|6|6|2|5|6|2|2|6|6
cost_center_id fk:fin_cost_center list:1|2|3|4|5|6|7|8|9|10|11|12

@hr_job * | job titles and their grade
job_id pk
job_title VARCHAR(60) list:Intern|Associate|Analyst|Engineer|Specialist|Senior Engineer|Team Lead|Manager|Director|Vice President|Technician|Coordinator
job_grade INTEGER list:1|2|2|3|3|4|4|5|6|7|2|2
is_managerial BOOLEAN list:0|0|0|0|0|0|1|1|1|1|0|0

@hr_employee 520 | employees of all legal entities
employee_id pk
full_name VARCHAR(100) person
email VARCHAR(120) email:full_name
department_id fk:hr_department
job_id fk:hr_job
manager_id fk:hr_employee?0.1 -- the employee's line manager
hire_date DATE date:2012..2024
termination_date DATE after:hire_date:200..2500?0.85 -- NULL while employed
employment_type VARCHAR(12) pick:full-time*8|part-time*2|contractor*1
base_salary DECIMAL(12,2) money:28000..210000 -- yearly base salary in USD
work_city_id fk:geo_city
audit

@hr_employment_history 900 | job and department changes of employees
history_id pk
employee_id fk:hr_employee
department_id fk:hr_department
job_id fk:hr_job
start_date DATE date:2015..2024
end_date DATE after:start_date:90..900?0.4

@hr_salary_change 1100 | salary changes (raises, promotions, adjustments)
salary_change_id pk
employee_id fk:hr_employee
effective_date DATE date
old_salary DECIMAL(12,2) money:28000..200000
new_salary DECIMAL(12,2) money:29000..210000
change_reason VARCHAR(20) pick:annual raise|promotion|market adjustment|transfer

@hr_bonus 800 | bonuses paid to employees
bonus_id pk
employee_id fk:hr_employee
bonus_year INTEGER pick:2022|2023|2024
bonus_amount DECIMAL(12,2) money:500..40000
bonus_type VARCHAR(16) pick:performance|signing|retention|spot

@hr_leave_type * | kinds of leave
leave_type_id pk
leave_type_name VARCHAR(30) list:Vacation|Sick Leave|Parental Leave|Unpaid Leave|Bereavement|Jury Duty
is_paid BOOLEAN list:1|1|1|0|1|1

@hr_leave_request 2200 | leave requested by employees
leave_request_id pk
employee_id fk:hr_employee
leave_type_id fk:hr_leave_type
start_date DATE date
end_date DATE after:start_date:1..20
status VARCHAR(12) pick:approved*12|pending*2|rejected*1
audit

@hr_performance_review 1300 | yearly performance reviews
review_id pk
employee_id fk:hr_employee
reviewer_id fk:hr_employee
review_year INTEGER pick:2022|2023|2024
rating INTEGER pick:1*1|2*3|3*8|4*6|5*2 -- 1 (poor) to 5 (outstanding)
review_date DATE date

@hr_goal 1500 | objectives set in performance reviews
goal_id pk
review_id fk:hr_performance_review
goal_title VARCHAR(100) pick:improve customer satisfaction|reduce costs|ship new feature|grow pipeline|mentor juniors|certification
is_achieved BOOLEAN flag:0.6

@hr_training_course * | internal and external training courses
course_id pk
course_name VARCHAR(80) list:Data Privacy Basics|Leadership Essentials|Advanced Excel|SQL for Analysts|Forklift Safety|Negotiation Skills|Cloud Fundamentals|First Aid|Project Management|Customer Empathy|Anti-Bribery Compliance|Public Speaking
provider VARCHAR(60) list:Internal Academy|Internal Academy|Skillsoft|DataCamp|SafeWork Institute|Harvard ManageMentor|AWS Training|Red Cross|PMI|Internal Academy|Internal Academy|Toastmasters
duration_hours INTEGER list:2|16|8|12|6|10|8|4|24|3|2|6
cost_per_seat DECIMAL(10,2) list:0|1200|150|300|250|900|0|80|1500|0|0|200

@hr_training_enrollment 2600 | employees enrolled in training courses
enrollment_id pk
employee_id fk:hr_employee
course_id fk:hr_training_course
enrolled_date DATE date
status VARCHAR(12) pick:completed*7|enrolled*2|dropped*1
score INTEGER int:40..100?0.3

@hr_timesheet 4000 | hours employees worked per week and project
timesheet_id pk
employee_id fk:hr_employee
week_start DATE date
project_id INTEGER int:1..80
hours_worked REAL real:2..45
is_overtime BOOLEAN flag:0.1

@hr_benefit_plan * | benefit plans employees can enroll in
benefit_plan_id pk
plan_name VARCHAR(60) list:Basic Health|Premium Health|Dental|Vision|Pension 401k|Life Insurance|Gym Membership|Commuter
monthly_cost DECIMAL(10,2) list:120|340|35|12|0|18|45|60
provider VARCHAR(60) list:Aetna|Aetna|Delta Dental|VSP|Fidelity|MetLife|ClassPass|TransitChek

@hr_benefit_enrollment 1400 | benefit plans employees are enrolled in
benefit_enrollment_id pk
employee_id fk:hr_employee
benefit_plan_id fk:hr_benefit_plan
start_date DATE date
coverage_level VARCHAR(16) pick:employee|employee+spouse|family

@hr_job_requisition 160 | open positions to fill
requisition_id pk
department_id fk:hr_department
job_id fk:hr_job
opened_date DATE date
closed_date DATE after:opened_date:10..120?0.3
status VARCHAR(12) pick:filled*6|open*3|cancelled*1

@hr_candidate 900 | job candidates
candidate_id pk
candidate_name VARCHAR(100) person
source VARCHAR(20) pick:referral|LinkedIn|job board|agency|career site
city_id fk:geo_city

@hr_application 1300 | applications of candidates to requisitions
application_id pk
candidate_id fk:hr_candidate
requisition_id fk:hr_job_requisition
applied_date DATE date
stage VARCHAR(16) pick:screening*5|interview*3|offer*1|hired*1|rejected*6

@hr_interview 1500 | interviews held with candidates
interview_id pk
application_id fk:hr_application
interviewer_id fk:hr_employee
interview_date DATE date
interview_type VARCHAR(16) pick:phone|technical|onsite|panel
recommendation VARCHAR(12) pick:hire|no hire|maybe

@fin_expense_report 700 | employee expense reports
expense_report_id pk
employee_id fk:hr_employee
submitted_date DATE date
approved_date DATE after:submitted_date:0..20?0.15
status VARCHAR(12) pick:approved*7|submitted*2|rejected*1
total_amount DECIMAL(12,2) money:20..6000

@fin_expense_item 2100 | lines of an expense report
expense_item_id pk
expense_report_id fk:fin_expense_report
expense_date DATE date
category VARCHAR(20) pick:travel*5|meals*4|lodging*3|software*1|training*1|office*2
amount DECIMAL(12,2) money:5..2500
merchant VARCHAR(80) pick:Delta Air Lines|Hilton|Marriott|Uber|Lyft|Starbucks|Amazon|Staples|Lufthansa|Airbnb

# ------------------------------------------------------------------------------------------------- logistics
@log_warehouse * | distribution centers and warehouses
warehouse_id pk
warehouse_name VARCHAR(60) list:North Hub|East Gate|Bay Depot|Lone Star DC|Harbor Point|Rhine Center|Thames Yard|Iberia Park|Tiber Depot|Nordic Base|Kanto Logistics Park|Southern Cross DC
city_id fk:geo_city list:2|1|4|3|5|15|10|21|23|20|25|27
capacity_pallets INTEGER int:2000..60000
opened_on DATE date:2005..2020
is_bonded BOOLEAN flag:0.3 -- customs bonded warehouse

@log_zone 60 | storage zones inside warehouses
zone_id pk
warehouse_id fk:log_warehouse
zone_code VARCHAR(8) pick:A|B|C|D|E|COLD|BULK
temperature_controlled BOOLEAN flag:0.2

@log_bin 900 | bin locations in zones
bin_id pk
zone_id fk:log_zone
bin_code VARCHAR(16) code:BIN
max_weight_kg INTEGER int:50..2000

@log_inventory_balance 2400 | stock on hand per product and warehouse (latest snapshot)
inventory_id pk
warehouse_id fk:log_warehouse
product_id fk:prod_product
quantity_on_hand INTEGER int:0..900
reorder_point INTEGER int:10..150
snapshot_date DATE date:2024..2024

@log_stock_movement 5000 | receipts, picks, transfers and adjustments of stock
movement_id pk
warehouse_id fk:log_warehouse
product_id fk:prod_product
movement_type VARCHAR(12) pick:receipt*3|pick*5|transfer*1|adjustment*1
quantity INTEGER int:1..200
movement_date DATE date

@log_carrier * | freight carriers
carrier_id pk
carrier_name VARCHAR(60) list:SwiftFreight|RailLink|AeroCargo|BlueWave Shipping|Metro Couriers|TransEuro|SkyBridge Express|Continental Rail|Pacific Lines|UrbanDrop
transport_mode VARCHAR(8) list:road|rail|air|sea|road|road|air|rail|sea|road
rating REAL real:2.8..5.0
scac_code VARCHAR(4) list:SWFT|RLNK|AERC|BLWV|METR|TREU|SKYB|CNRL|PACL|URBD -- standard carrier alpha code

@log_service_level * | delivery service levels offered
service_level_id pk
service_name VARCHAR(30) list:Same Day|Next Day|Express|Standard|Economy|Freight
promised_days INTEGER list:0|1|2|4|7|10

@log_shipment 3600 | outbound shipments to customers
shipment_id pk
tracking_number VARCHAR(30) code:TRK
order_id fk:sales_order?0.05
warehouse_id fk:log_warehouse
carrier_id fk:log_carrier
service_level_id fk:log_service_level
ship_date DATE date
promised_date DATE after:ship_date:0..10
delivered_date DATE after:ship_date:0..14?0.05 -- NULL while in transit
weight_kg REAL real:0.2..900
freight_cost DECIMAL(12,2) money:4..2500
audit

@log_shipment_line 6500 | products in a shipment
shipment_line_id pk
shipment_id fk:log_shipment
product_id fk:prod_product
quantity INTEGER pick:1*6|2*3|3*2|5*1

@log_tracking_event 9000 | carrier scan events of shipments
tracking_event_id pk
shipment_id fk:log_shipment
event_time TIMESTAMP ts
event_type VARCHAR(20) pick:picked up|in transit|at hub|out for delivery|delivered|exception
city_id fk:geo_city

@log_vehicle 80 | the company's own delivery vehicles
vehicle_id pk
plate_number VARCHAR(12) code:PL
vehicle_type VARCHAR(16) pick:van|box truck|semi-trailer|cargo bike
warehouse_id fk:log_warehouse
capacity_kg INTEGER int:200..24000
in_service_since DATE date:2014..2024

@log_driver 120 | delivery drivers
driver_id pk
driver_name VARCHAR(80) person
license_class VARCHAR(4) pick:B|C|CE|C1
warehouse_id fk:log_warehouse
hire_date DATE date:2012..2024

@log_route 150 | delivery routes driven by own vehicles
route_id pk
route_code VARCHAR(12) code:RT
warehouse_id fk:log_warehouse
vehicle_id fk:log_vehicle
driver_id fk:log_driver
distance_km INTEGER int:20..900

@log_route_stop 1800 | stops on delivery routes
route_stop_id pk
route_id fk:log_route
stop_sequence INTEGER int:1..30
customer_id fk:sales_customer
planned_arrival TIMESTAMP ts

@log_freight_invoice 1500 | invoices from carriers for freight
freight_invoice_id pk
carrier_id fk:log_carrier
invoice_date DATE date
amount DECIMAL(12,2) money:100..30000
shipment_count INTEGER int:1..80
is_disputed BOOLEAN flag:0.07

@log_cycle_count 1200 | periodic physical stock counts
cycle_count_id pk
bin_id fk:log_bin
product_id fk:prod_product
count_date DATE date
expected_quantity INTEGER int:0..300
counted_quantity INTEGER int:0..300

# ----------------------------------------------------------------------------------------------- procurement
@proc_supplier 140 | suppliers of goods for resale and production
supplier_id pk
supplier_name VARCHAR(100) company
supplier_category VARCHAR(20) pick:electronics|furniture|packaging|raw materials|textiles|chemicals
country_id fk:geo_country
onboarded_date DATE date:2010..2024
is_certified BOOLEAN flag:0.6 -- ISO 9001 certified

@proc_supplier_contact 260 | contact persons at suppliers
supplier_contact_id pk
supplier_id fk:proc_supplier
contact_name VARCHAR(80) person
phone VARCHAR(30) phone

@proc_contract 220 | framework contracts with suppliers
contract_id pk
supplier_id fk:proc_supplier
start_date DATE date:2020..2024
end_date DATE after:start_date:180..1100
annual_value DECIMAL(14,2) money:10000..3000000
auto_renew BOOLEAN flag:0.4

@proc_requisition 900 | internal purchase requests
requisition_id pk
requested_by INTEGER int:1..520 -- employee_id of the requester
cost_center_id fk:fin_cost_center
request_date DATE date
status VARCHAR(12) pick:approved*6|pending*2|rejected*1
estimated_amount DECIMAL(12,2) money:50..50000

@proc_purchase_order 1800 | purchase orders sent to suppliers
purchase_order_id pk
po_number VARCHAR(20) code:PO
supplier_id fk:proc_supplier
requisition_id fk:proc_requisition?0.3
warehouse_id fk:log_warehouse
order_date DATE date
expected_date DATE after:order_date:5..45
status VARCHAR(12) pick:received*6|open*2|partially received*1|cancelled*1
total_amount DECIMAL(14,2) money:100..120000
audit

@proc_purchase_order_line 4200 | lines of purchase orders
po_line_id pk
purchase_order_id fk:proc_purchase_order
product_id fk:prod_product
quantity INTEGER int:5..500
unit_cost DECIMAL(12,2) copy:product_id.standard_cost

@proc_goods_receipt 1700 | goods received against purchase orders
receipt_id pk
purchase_order_id fk:proc_purchase_order
received_date DATE date
received_by INTEGER int:1..520
quantity_received INTEGER int:5..500
quantity_rejected INTEGER pick:0*10|1*2|2*1|5*1

@proc_supplier_rating 500 | quarterly supplier scorecards
supplier_rating_id pk
supplier_id fk:proc_supplier
rating_quarter VARCHAR(7) pick:2023-Q1|2023-Q2|2023-Q3|2023-Q4|2024-Q1|2024-Q2
on_time_pct REAL real:60..100
quality_score INTEGER int:1..10

# --------------------------------------------------------------------------------------------------- support
@sup_team * | customer support teams
team_id pk
team_name VARCHAR(40) list:Tier 1|Tier 2|Billing|Enterprise|Returns|Technical
shift VARCHAR(10) list:day|day|day|follow-the-sun|day|night

@sup_agent 48 | support agents
agent_id pk
agent_name VARCHAR(80) person
team_id fk:sup_team
hire_date DATE date:2016..2024
languages VARCHAR(60) pick:en|en,es|en,fr|en,de|en,ja|en,pt

@sup_sla_policy * | response and resolution targets by priority
sla_policy_id pk
priority VARCHAR(8) list:low|medium|high|urgent
first_response_hours INTEGER list:48|24|8|1
resolution_hours INTEGER list:240|120|48|8

@sup_ticket_category * | ticket categories
ticket_category_id pk
category_name VARCHAR(40) list:billing|login|bug|feature request|performance|data export|shipping|returns|warranty
is_technical BOOLEAN list:0|1|1|1|1|1|0|0|0

@sup_ticket 4000 | support tickets raised by customers
ticket_id pk
customer_id fk:sales_customer
agent_id fk:sup_agent
ticket_category_id fk:sup_ticket_category
priority VARCHAR(8) pick:low*5|medium*6|high*3|urgent*1
status VARCHAR(12) pick:closed*12|open*2|pending*1|on hold*1
channel VARCHAR(10) pick:email*5|chat*4|phone*3|web form*2
created_at TIMESTAMP ts
resolved_at TIMESTAMP after:created_at:0..20?0.12 -- NULL while unresolved
subject VARCHAR(120) pick:cannot log in|refund request|invoice question|app crashes|slow dashboard|wrong item received|where is my order|export fails

@sup_ticket_comment 9000 | comments on tickets by agents and customers
comment_id pk
ticket_id fk:sup_ticket
author_type VARCHAR(10) pick:agent*3|customer*2
comment_time TIMESTAMP ts
is_internal BOOLEAN flag:0.2

@sup_ticket_status_history 7000 | status changes of tickets
status_history_id pk
ticket_id fk:sup_ticket
old_status VARCHAR(12) pick:open|pending|on hold
new_status VARCHAR(12) pick:pending|on hold|closed
changed_at TIMESTAMP ts

@sup_escalation 900 | tickets escalated to a higher team
escalation_id pk
ticket_id fk:sup_ticket
from_team_id fk:sup_team
to_team_id fk:sup_team
escalated_at TIMESTAMP ts
reason VARCHAR(40) pick:needs specialist|customer request|SLA breach|VIP customer

@sup_csat_survey 2400 | customer satisfaction surveys after a ticket
survey_id pk
ticket_id fk:sup_ticket
response_date DATE date
score INTEGER pick:1*1|2*1|3*2|4*4|5*5 -- 1 (very unhappy) to 5 (very happy)
would_recommend BOOLEAN flag:0.7

@sup_kb_article 150 | knowledge base articles
article_id pk
title VARCHAR(120) kbtitle
ticket_category_id fk:sup_ticket_category
author_agent_id fk:sup_agent
published_date DATE date:2021..2024

@sup_kb_article_view 6000 | views of knowledge base articles
article_view_id pk
article_id fk:sup_kb_article
view_date DATE date
customer_id fk:sales_customer?0.4
was_helpful BOOLEAN flag:0.6

@sup_call 2500 | phone calls handled by the contact center
call_id pk
agent_id fk:sup_agent
customer_id fk:sales_customer?0.1
call_start TIMESTAMP ts
duration_seconds INTEGER int:20..3600
outcome VARCHAR(16) pick:resolved*6|ticket created*3|callback*1|dropped*1

# ------------------------------------------------------------------------------------------------- marketing
@mkt_campaign 60 | marketing campaigns
campaign_id pk
campaign_name VARCHAR(80) campaign
campaign_type VARCHAR(16) pick:email|social|search|display|event|print
start_date DATE date
end_date DATE after:start_date:10..90
owner_employee_id fk:hr_employee
budget_amount DECIMAL(12,2) money:2000..400000

@mkt_channel * | paid media channels
media_channel_id pk
media_channel_name VARCHAR(30) list:Google Ads|Meta Ads|LinkedIn Ads|TikTok Ads|Display Network|Podcast|Out of Home|Newsletter
is_paid BOOLEAN list:1|1|1|1|1|1|1|0

@mkt_ad_spend 2000 | daily ad spend per campaign and channel
ad_spend_id pk
campaign_id fk:mkt_campaign
media_channel_id fk:mkt_channel
spend_date DATE date
impressions INTEGER int:100..400000
clicks INTEGER int:0..9000
spend_amount DECIMAL(12,2) money:5..9000

@mkt_segment * | audience segments for targeting
segment_id pk
segment_name VARCHAR(60) list:New Customers|Lapsed Buyers|High Value|Newsletter Subscribers|B2B Decision Makers|Students|Outdoor Enthusiasts|Home Office
rule_description VARCHAR(200) list:first order in last 90 days|no order in 12 months|top 10% by spend|opted in to newsletter|business customers with title manager or above|verified student|bought sports products|bought office furniture

@mkt_audience_member 3000 | customers in audience segments
audience_member_id pk
segment_id fk:mkt_segment
customer_id fk:sales_customer
added_date DATE date

@mkt_email_template 40 | email templates
email_template_id pk
template_name VARCHAR(80) pick:welcome|abandoned cart|newsletter|promotion|survey|win-back|order follow-up
subject_line VARCHAR(120) pick:Welcome aboard|You left something behind|This week at Northwind|Save big today|Tell us what you think|We miss you
language VARCHAR(5) pick:en*6|de*1|fr*1|es*1

@mkt_email_send 6000 | emails sent to customers
email_send_id pk
campaign_id fk:mkt_campaign
email_template_id fk:mkt_email_template
customer_id fk:sales_customer
sent_at TIMESTAMP ts

@mkt_email_event 7000 | opens, clicks, bounces and unsubscribes of sent emails
email_event_id pk
email_send_id fk:mkt_email_send
event_type VARCHAR(12) pick:open*10|click*4|bounce*1|unsubscribe*1
event_time TIMESTAMP ts

@mkt_lead_source * | where marketing leads come from
lead_source_id pk
source_name VARCHAR(40) list:Website Form|Trade Show|Webinar|Referral|Cold Outreach|Partner|Content Download
is_inbound BOOLEAN list:1|0|1|1|0|0|1

@mkt_lead 1500 | sales leads generated by marketing
lead_id pk
lead_name VARCHAR(100) person
company_name VARCHAR(100) company
lead_source_id fk:mkt_lead_source
campaign_id fk:mkt_campaign?0.3
created_date DATE date
lead_status VARCHAR(16) pick:new*3|contacted*3|qualified*2|converted*1|disqualified*2
converted_customer_id fk:sales_customer?0.85

@mkt_web_session 6000 | visits to the company web site
session_id pk
visitor_id INTEGER int:1..2500
campaign_id fk:mkt_campaign?0.7
session_start TIMESTAMP ts
device_type VARCHAR(10) pick:desktop*5|mobile*6|tablet*1
landing_page VARCHAR(120) pick:/|/sale|/products|/blog|/support|/contact
pages_viewed INTEGER int:1..25

@mkt_coupon 400 | coupon codes handed out by campaigns
coupon_id pk
coupon_code VARCHAR(20) code:CPN
campaign_id fk:mkt_campaign
discount_pct REAL pick:0.05|0.1|0.15|0.2
expires_on DATE date
times_redeemed INTEGER int:0..120

@mkt_event 40 | trade shows and events the company attends
event_id pk
event_name VARCHAR(80) pick:CES|IFA Berlin|Office Expo|Outdoor Retailer|Home Show|Web Summit|Retail Week
city_id fk:geo_city
event_date DATE date
cost DECIMAL(12,2) money:3000..250000
leads_collected INTEGER int:0..600

# --------------------------------------------------------------------------------------------- manufacturing
@mfg_plant * | production plants
plant_id pk
plant_name VARCHAR(60) list:Detroit Assembly|Monterrey Works|Stuttgart Plant|Lyon Factory|Milan Atelier|Osaka Plant|Melbourne Works
city_id fk:geo_city list:2|8|16|14|24|26|28
opened_on DATE date:1995..2018
iso14001_certified BOOLEAN list:1|0|1|1|0|1|0 -- environmental management certification

@mfg_production_line 28 | production lines in plants
line_id pk
plant_id fk:mfg_plant
line_name VARCHAR(30) pick:Line A|Line B|Line C|Line D|Packaging|Final Assembly
capacity_units_per_hour INTEGER int:20..600

@mfg_machine 160 | machines on production lines
machine_id pk
line_id fk:mfg_production_line
machine_type VARCHAR(30) pick:CNC mill|injection molder|press|robot arm|conveyor|packaging machine|laser cutter
manufacturer VARCHAR(60) pick:Siemens|Fanuc|ABB|Haas|Trumpf|Kuka|Bosch Rexroth
installed_on DATE date:2005..2024
last_serviced DATE date

@mfg_shift * | production shifts
shift_id pk
shift_name VARCHAR(20) list:Early|Late|Night|Weekend
start_hour INTEGER list:6|14|22|8
end_hour INTEGER list:14|22|6|20

@mfg_bom 120 | bills of materials for manufactured products
bom_id pk
product_id fk:prod_product
revision VARCHAR(8) pick:A|B|C|D
effective_date DATE date:2020..2024
is_active BOOLEAN flag:0.8

@mfg_bom_component 900 | components of a bill of materials
bom_component_id pk
bom_id fk:mfg_bom
component_product_id fk:prod_product
quantity_per REAL real:0.1..12
scrap_factor REAL real:0..0.08

@mfg_work_order 2600 | production orders
work_order_id pk
work_order_number VARCHAR(20) code:WO
product_id fk:prod_product
line_id fk:mfg_production_line
planned_start DATE date
actual_finish DATE after:planned_start:0..12?0.08
quantity_planned INTEGER int:50..5000
quantity_produced INTEGER int:0..5000
status VARCHAR(12) pick:completed*8|in progress*2|planned*1|cancelled*1

@mfg_production_run 5200 | runs of a work order per shift
run_id pk
work_order_id fk:mfg_work_order
shift_id fk:mfg_shift
run_date DATE date
units_good INTEGER int:0..900
units_scrap INTEGER int:0..60

@mfg_downtime_event 1600 | machine downtime
downtime_id pk
machine_id fk:mfg_machine
start_time TIMESTAMP ts
duration_minutes INTEGER int:5..900
cause VARCHAR(30) pick:breakdown*4|changeover*5|maintenance*3|material shortage*2|power outage*1

@mfg_quality_inspection 3400 | quality inspections of work order output
inspection_id pk
work_order_id fk:mfg_work_order
inspection_date DATE date
inspector_id fk:hr_employee
result VARCHAR(8) pick:pass*17|fail*2|rework*1
sample_size INTEGER int:5..200

@mfg_defect 1400 | defects found in inspections
defect_id pk
inspection_id fk:mfg_quality_inspection
defect_type VARCHAR(30) pick:scratch|dent|misalignment|wrong color|missing part|electrical fault
severity VARCHAR(8) pick:minor*6|major*3|critical*1
units_affected INTEGER int:1..40

@mfg_maintenance_order 700 | maintenance work on machines
maintenance_order_id pk
machine_id fk:mfg_machine
opened_date DATE date
completed_date DATE after:opened_date:0..15?0.1
maintenance_type VARCHAR(16) pick:preventive*5|corrective*3|calibration*1
labor_hours REAL real:0.5..40

# -------------------------------------------------------------------------------------------------------- IT
@it_application 40 | business applications run by IT
application_id pk
application_name VARCHAR(60) itapp
vendor_id fk:fin_vendor?0.3
business_owner_id fk:hr_employee
criticality VARCHAR(8) pick:low|medium|high|critical
go_live_date DATE date:2012..2024

@it_server 120 | servers hosting applications
server_id pk
hostname VARCHAR(40) code:srv
application_id fk:it_application
environment VARCHAR(8) pick:prod*4|test*2|dev*2
operating_system VARCHAR(30) pick:Ubuntu 22.04|RHEL 9|Windows Server 2022|Debian 12
cpu_cores INTEGER pick:4|8|16|32|64
datacenter VARCHAR(20) pick:Frankfurt DC|Virginia DC|Tokyo DC|AWS eu-west-1|Azure East US

@it_asset 1100 | hardware assets (laptops, phones, monitors)
it_asset_id pk
asset_tag VARCHAR(20) code:IT
asset_type VARCHAR(16) pick:laptop*5|monitor*3|phone*3|tablet*1|headset*2
model VARCHAR(60) pick:ThinkPad T14|MacBook Pro 14|Dell Latitude 7440|iPhone 15|Galaxy S24|Dell U2723QE|Jabra Evolve2
purchase_date DATE date:2019..2024
purchase_cost DECIMAL(10,2) money:80..3500
status VARCHAR(12) pick:in use*8|in stock*2|retired*2|repair*1

@it_asset_assignment 1300 | which employee has which asset
assignment_id pk
it_asset_id fk:it_asset
employee_id fk:hr_employee
assigned_date DATE date
returned_date DATE after:assigned_date:30..700?0.6

@it_software 50 | software products licensed by the company
software_id pk
software_name VARCHAR(60) pick:Microsoft 365|Slack|Zoom|Salesforce|Tableau|Jira|Confluence|Figma|Adobe Acrobat|GitHub|Workday|SAP S/4HANA|Snowflake|Okta|Zendesk
vendor_id fk:fin_vendor
license_model VARCHAR(16) pick:per user|per device|site|subscription

@it_license 600 | license purchases and renewals
license_id pk
software_id fk:it_software
seats INTEGER int:5..2000
start_date DATE date
end_date DATE after:start_date:180..1100
annual_cost DECIMAL(12,2) money:500..400000

@it_incident 2300 | IT incidents reported by employees
incident_id pk
application_id fk:it_application
reported_by fk:hr_employee
reported_at TIMESTAMP ts
severity VARCHAR(4) pick:P1*1|P2*3|P3*8|P4*6
resolved_at TIMESTAMP after:reported_at:0..10?0.08
root_cause VARCHAR(30) pick:configuration|software bug|hardware failure|network|user error|capacity?0.2

@it_change_request 900 | changes to production systems
change_id pk
application_id fk:it_application
requested_by fk:hr_employee
planned_date DATE date
change_type VARCHAR(12) pick:standard*5|normal*4|emergency*1
outcome VARCHAR(12) pick:successful*12|rolled back*1|failed*1

@it_access_request 1500 | requests for access to applications
access_request_id pk
employee_id fk:hr_employee
application_id fk:it_application
requested_date DATE date
approved BOOLEAN flag:0.85
access_level VARCHAR(10) pick:read|write|admin

# -------------------------------------------------------------------------------------------------- projects
@prj_project 80 | internal and customer projects
project_id pk
project_name VARCHAR(100) project
customer_id fk:sales_customer?0.5
manager_id fk:hr_employee
start_date DATE date
planned_end_date DATE after:start_date:60..500
status VARCHAR(12) pick:active*4|completed*4|on hold*1|cancelled*1
budget_amount DECIMAL(14,2) money:10000..2000000

@prj_phase 300 | phases of projects
phase_id pk
project_id fk:prj_project
phase_name VARCHAR(30) pick:Discovery|Design|Build|Test|Rollout|Hypercare
start_date DATE date
end_date DATE after:start_date:14..120

@prj_task 3000 | tasks within project phases
task_id pk
phase_id fk:prj_phase
assignee_id fk:hr_employee
task_title VARCHAR(120) pick:write spec|review design|build prototype|run tests|fix defects|train users|migrate data
estimate_hours REAL real:1..80
status VARCHAR(12) pick:done*6|in progress*2|todo*2|blocked*1
due_date DATE date

@prj_time_entry 6000 | hours booked on project tasks
time_entry_id pk
task_id fk:prj_task
employee_id fk:hr_employee
work_date DATE date
hours REAL real:0.5..10
is_billable BOOLEAN flag:0.6

@prj_milestone 400 | project milestones
milestone_id pk
project_id fk:prj_project
milestone_name VARCHAR(60) pick:kick-off|design sign-off|go-live|final acceptance|phase gate
due_date DATE date
achieved_date DATE after:due_date:-10..40?0.3

@prj_risk 350 | project risks
risk_id pk
project_id fk:prj_project
description VARCHAR(200) pick:key person leaves|vendor delay|budget overrun|scope creep|data quality|regulatory change
probability VARCHAR(8) pick:low|medium|high
impact VARCHAR(8) pick:low|medium|high
is_open BOOLEAN flag:0.5

# ------------------------------------------------------------------------------------------------ facilities
@fac_site * | office and operations sites
site_id pk
site_name VARCHAR(60) list:New York HQ|Chicago Office|Austin Campus|London Office|Berlin Office|Paris Office|Dublin Support Center|Tokyo Office|Sydney Office|Zurich Office
city_id fk:geo_city list:1|2|3|10|15|13|12|25|27|19
site_type VARCHAR(16) list:headquarters|office|campus|office|office|office|contact center|office|office|office

@fac_building 24 | buildings at sites
building_id pk
site_id fk:fac_site
building_name VARCHAR(40) pick:Main|North Wing|South Wing|Annex|Tower
floors INTEGER int:1..40
gross_area_m2 INTEGER int:800..60000

@fac_room 300 | meeting rooms and offices
room_id pk
building_id fk:fac_building
room_name VARCHAR(40) code:R
room_type VARCHAR(16) pick:meeting room*5|office*4|lab*1|training room*1
capacity INTEGER int:2..120

@fac_room_booking 5000 | meeting room bookings
booking_id pk
room_id fk:fac_room
booked_by fk:hr_employee
booking_date DATE date
start_hour INTEGER int:7..19
duration_minutes INTEGER pick:30|60|90|120|240

@fac_maintenance_request 1200 | building maintenance requests
request_id pk
building_id fk:fac_building
reported_by fk:hr_employee
reported_date DATE date
category VARCHAR(20) pick:HVAC|plumbing|electrical|cleaning|furniture|access control
closed_date DATE after:reported_date:0..30?0.1

@fac_energy_reading 2100 | monthly energy meter readings of buildings
reading_id pk
building_id fk:fac_building
reading_month VARCHAR(7) pick:2023-01|2023-02|2023-03|2023-04|2023-05|2023-06|2023-07|2023-08|2023-09|2023-10|2023-11|2023-12
electricity_kwh REAL real:2000..400000
gas_m3 REAL real:0..40000
water_m3 REAL real:10..9000

@fac_lease 30 | property leases
lease_id pk
site_id fk:fac_site
landlord VARCHAR(100) company
start_date DATE date:2015..2023
end_date DATE after:start_date:1000..4000
monthly_rent DECIMAL(12,2) money:5000..400000

# ----------------------------------------------------------------------------------------- legal / compliance
@legal_contract 400 | customer and partner contracts managed by legal
legal_contract_id pk
counterparty VARCHAR(100) company
contract_type VARCHAR(20) pick:NDA|MSA|distribution|license|lease|employment
entity_id fk:core_legal_entity
signed_date DATE date
expiry_date DATE after:signed_date:180..1800?0.2
value_amount DECIMAL(14,2) money:0..5000000

@legal_case 90 | legal cases and disputes
case_id pk
case_reference VARCHAR(20) code:CASE
case_type VARCHAR(20) pick:customer claim|employment|IP|supplier dispute|regulatory
opened_date DATE date
closed_date DATE after:opened_date:30..700?0.4
estimated_exposure DECIMAL(14,2) money:1000..3000000

@cmp_policy * | company policies employees must follow
policy_id pk
policy_name VARCHAR(80) list:Code of Conduct|Data Protection|Information Security|Anti-Bribery|Travel and Expenses|Health and Safety|Remote Work|Whistleblowing
owner_department_id fk:hr_department list:8|8|11|8|4|6|5|8
last_reviewed DATE date

@cmp_audit 120 | internal and external audits
audit_id pk
audit_name VARCHAR(100) pick:SOX controls|ISO 9001 surveillance|GDPR review|inventory audit|payroll audit|IT general controls
audit_type VARCHAR(10) pick:internal|external
department_id fk:hr_department
start_date DATE date
end_date DATE after:start_date:5..60

@cmp_audit_finding 480 | findings raised by audits
finding_id pk
audit_id fk:cmp_audit
severity VARCHAR(8) pick:low*5|medium*3|high*1
finding_text VARCHAR(200) pick:missing approval|segregation of duties|outdated policy|access not revoked|incomplete records|late reconciliation
due_date DATE date
remediated_date DATE after:due_date:-30..90?0.4

@cmp_policy_attestation 3600 | employees confirming they read a policy
attestation_id pk
policy_id fk:cmp_policy
employee_id fk:hr_employee
attested_date DATE date

# -------------------------------------------------------------------------------------------------- web shop
@web_cart 3000 | shopping carts on the web shop
cart_id pk
session_id fk:mkt_web_session
customer_id fk:sales_customer?0.4
created_at TIMESTAMP ts
converted_order_id fk:sales_order?0.7 -- the order the cart became, NULL if abandoned

@web_cart_item 6500 | products put in carts
cart_item_id pk
cart_id fk:web_cart
product_id fk:prod_product
quantity INTEGER pick:1*8|2*2|3*1
added_at TIMESTAMP ts

@web_wishlist_item 1800 | products customers saved for later
wishlist_item_id pk
customer_id fk:sales_customer
product_id fk:prod_product
added_date DATE date

@web_search_query 5000 | searches typed in the web shop
search_id pk
session_id fk:mkt_web_session
query_text VARCHAR(120) pick:desk|chair|headphones|blender|tent|laptop stand|yoga mat|kettle|monitor|lamp|backpack|puzzle
results_count INTEGER int:0..400
clicked_product_id fk:prod_product?0.5

# --------------------------------------------------------------------------------------------------- loyalty
@loy_program * | loyalty program tiers
program_tier_id pk
tier_name VARCHAR(20) list:Bronze|Silver|Gold|Platinum
min_points INTEGER list:0|1000|5000|15000
points_per_dollar REAL list:1|1.25|1.5|2

@loy_member 700 | customers enrolled in the loyalty program
member_id pk
customer_id fk:sales_customer
program_tier_id fk:loy_program
joined_date DATE date:2020..2024
points_balance INTEGER int:0..40000

@loy_points_transaction 5000 | points earned and spent
points_txn_id pk
member_id fk:loy_member
order_id fk:sales_order?0.3
txn_date DATE date
points INTEGER int:-3000..3000 -- positive when earned, negative when redeemed

@loy_reward_redemption 1300 | rewards redeemed with points
redemption_id pk
member_id fk:loy_member
reward_name VARCHAR(60) pick:10 USD voucher|free shipping|gift card 50|extended warranty|early access
points_spent INTEGER int:500..8000
redeemed_date DATE date
"""

# ------------------------------------------------------------------------------------------------ value pools

_PRODUCT_NOUNS = ("Headphones Monitor Keyboard Mouse Webcam Speaker Charger Tablet Router Desk Chair Bookcase Sofa "
                  "Cabinet Lamp Shelf Stool Notebook Stapler Binder Planner Blender Kettle Toaster Skillet Mixer "
                  "Juicer Racket Dumbbell Helmet Backpack Bottle Tent Puzzle Drone Kite Scooter Atlas Cookbook "
                  "Hose Planter Grill Lantern").split()
_PRODUCT_ADJ = "Pro Max Mini Air Plus Lite Classic Ultra Compact Smart".split()
_BRANDS = "Nova Apex Zenith Orbit Vista Pulse Terra Luma Echo Summit Polar Aurora".split()
_COMPANY_A = ("Acme Globex Initech Umbrella Stark Wayne Hooli Vandelay Cyberdyne Soylent Tyrell Wonka Oscorp "
              "Gringotts Dunder Massive Pied Aperture Blue Sun Monarch Virtucon Gekko Prestige Sterling Nakatomi "
              "Rekall Weyland Tricell Oceanic Bluth Krusty Duff Vance Clampett Spacely Cogswell").split()
_COMPANY_B = "Corp Ltd Group Systems Industries Holdings Partners Logistics Supply Labs Trading GmbH".split()
_SUBCATS = ("Audio Displays Computer Accessories Networking Desks Seating Storage Lighting Paper Writing Filing "
            "Small Appliances Cookware Cutlery Fitness Camping Team Sports Cycling Puzzles Outdoor Toys Building Sets "
            "Plush Fiction Travel Guides Cooking Children Tools Planters Watering Grills").split()
_STREETS = "Main Oak Pine Maple Cedar Elm Lake Hill Park River Station Market Church Mill High King Queen".split()
_CAMPAIGN_A = "Spring|Summer|Autumn|Winter|Holiday|Back to School|Black Friday|New Year|Mid-Year|Brand".split("|")
_CAMPAIGN_B = "Launch Sale Push Awareness Retargeting Promo Webinar Series Giveaway Drive".split()
_PROJECT_A = "ERP|Warehouse|CRM|Website|Data Platform|Payroll|Mobile App|Supplier Portal|Pricing|Security".split("|")
_PROJECT_B = "Migration Upgrade Rollout Redesign Automation Integration Consolidation Pilot Refresh".split()
_IT_APPS = ("SAP ERP|Salesforce CRM|Workday HCM|Oracle Payroll|Manhattan WMS|Blue Yonder Planning|Zendesk Support|"
            "Tableau Server|Snowflake Warehouse|Shopify Storefront|Stripe Billing|Coupa Procurement|ServiceNow ITSM|"
            "Okta Identity|Jira Cloud|Confluence Wiki|Microsoft Exchange|Slack Enterprise|Concur Expenses|"
            "MES Plant Floor|Siemens PLM|Qualtrics Surveys|HubSpot Marketing|Adobe Experience|Power BI|"
            "Kronos Timekeeping|DocuSign|Ironclad CLM|NetSuite Finance|Looker|Segment CDP|Twilio Contact Center|"
            "Samsara Fleet|Project Online|Veeva Quality|Ariba Sourcing|Avalara Tax|BlackLine Close|Greenhouse ATS|"
            "LinkedIn Recruiter").split("|")
_KB_TOPICS = ("reset your password|update billing details|track an order|return a product|download invoices|"
              "set up two-factor login|export your data|fix slow dashboards|change delivery address|"
              "claim a warranty|cancel a subscription|use the mobile app|connect the API|merge accounts").split("|")
_STORE_AREAS = "Downtown Uptown Riverside Harbor Central Airport Mall Park Station Old Town".split()


def _parse_spec(text: str) -> list[dict]:
    tables: list[dict] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            head, _, comment = line[1:].partition("|")
            name, rows = head.split()
            tables.append({"name": name, "rows": None if rows == "*" else int(rows), "comment": comment.strip(),
                           "cols": [], "audit": False})
            continue
        if line == "audit":
            tables[-1]["audit"] = True
            continue
        code, _, comment = line.partition(" -- ")
        parts = code.split(None, 2)
        name = parts[0]
        if parts[1] == "pk":
            col = {"name": name, "type": "INTEGER", "gen": "pk"}
        elif parts[1].startswith("fk:"):
            col = {"name": name, "type": "INTEGER", "gen": parts[1] + (" " + parts[2] if len(parts) > 2 else "")}
        else:
            col = {"name": name, "type": parts[1], "gen": parts[2] if len(parts) > 2 else ""}
        if len(parts) > 2 and parts[1] == "INTEGER" and parts[2] == "pk":
            col = {"name": name, "type": "INTEGER", "gen": "pk"}
        col["comment"] = comment.strip()
        tables[-1]["cols"].append(col)
    for t in tables:
        have = {c["name"] for c in t["cols"]}
        if (t["audit"] or (t["rows"] or 0) >= 500) and "created_at" not in have:  # transactional tables: audit
            t["cols"] += [{"name": "created_at", "type": "TIMESTAMP", "gen": "ts", "comment": ""},
                          {"name": "updated_at", "type": "TIMESTAMP", "gen": "after:created_at:0..200",
                           "comment": ""},
                          {"name": "created_by", "type": "VARCHAR(40)", "gen": "pick:etl_service*8|admin|jdoe|msmith",
                           "comment": "user or service account that created the row"}]
        system = _SOURCE_SYSTEMS[t["name"].split("_")[0]]
        t["cols"] += [{"name": "source_system", "type": "VARCHAR(20)", "gen": f"const:{system}",
                       "comment": "system of record the row was loaded from"},
                      {"name": "etl_loaded_at", "type": "TIMESTAMP", "gen": "etl", "comment": "last warehouse load"}]
    return tables


_SOURCE_SYSTEMS = {"core": "MDM", "geo": "MDM", "prod": "PIM", "sales": "Salesforce", "fin": "SAP", "hr": "Workday",
                   "log": "SAP EWM", "proc": "Coupa", "sup": "Zendesk", "mkt": "HubSpot", "mfg": "SAP PP",
                   "it": "ServiceNow", "prj": "Jira", "fac": "Archibus", "legal": "Ironclad", "cmp": "Archer",
                   "web": "Shopify", "loy": "Salesforce"}


TABLES = _parse_spec(SPEC)
_BY_NAME = {t["name"]: t for t in TABLES}


def _pk(table: dict) -> str:
    return next(c["name"] for c in table["cols"] if c["gen"] == "pk")


def _fk_target(gen: str) -> str | None:
    if not gen.startswith("fk:"):
        return None
    return gen[3:].split()[0].split("?")[0]


def ddl(table: dict) -> str:
    """CREATE TABLE of one table: one column a line, comments after the column."""
    lines = []
    cols = table["cols"]
    for k, c in enumerate(cols):
        target = _fk_target(c["gen"])
        if c["gen"] == "pk":
            code = f"{c['name']} INTEGER PRIMARY KEY"
        elif target:
            nullable = "?" in c["gen"] or target == table["name"]
            code = f"{c['name']} INTEGER{'' if nullable else ' NOT NULL'} REFERENCES {target}({_pk(_BY_NAME[target])})"
        else:
            code = f"{c['name']} {c['type']}"
            if c["gen"].startswith(("list:", "code:", "person", "company", "product")) and k <= 2:
                code += " NOT NULL"
        line = "  " + code + ("," if k < len(cols) - 1 else "")
        lines.append(line + (f" -- {c['comment']}" if c["comment"] else ""))
    return f"CREATE TABLE {table['name']} ( -- {table['comment']}\n" + "\n".join(lines) + "\n)"


# ------------------------------------------------------------------------------------------------- row values

_START, _END = date(2022, 1, 1), date(2024, 12, 31)
_ISO: dict[int, str] = {}
_ORD: dict[str, int] = {}


def _iso(ordinal: int) -> str:
    if ordinal not in _ISO:
        _ISO[ordinal] = date.fromordinal(ordinal).isoformat()
    return _ISO[ordinal]


def _ordinal(iso: str) -> int:
    if iso not in _ORD:
        _ORD[iso] = date.fromisoformat(iso).toordinal()
    return _ORD[iso]


def _ts(first_ordinal: int, seconds: int) -> str:
    days, rest = divmod(seconds, 86400)
    return f"{_iso(first_ordinal + days)} {rest // 3600:02d}:{rest // 60 % 60:02d}:{rest % 60:02d}"


def _weighted(spec: str) -> tuple[list[str], list[float]]:
    vals, weights = [], []
    for part in spec.split("|"):
        v, _, w = part.rpartition("*") if "*" in part else (part, "", "1")
        vals.append(v)
        weights.append(float(w))
    return vals, list(itertools.accumulate(weights))


def _typed(v: str, sql_type: str):
    t = sql_type.upper()
    if t.startswith(("INT", "BOOL")):
        return int(v)
    if t.startswith(("REAL", "DEC")):
        return float(v)
    return v


_FIRST = ("Aaron Abigail Adrian Aisha Alice Amir Ana Andre Anna Arjun Astrid Ben Bianca Carla Chen Chloe Daniel "
          "Diego Elena Emma Erik Fatima Felix Grace Hana Hugo Ines Isaac Jamal Jonas Julia Kai Kenji Lara Leo "
          "Lina Lucas Maria Marco Maya Mina Nadia Nils Noah Olga Omar Paula Pedro Priya Rafael Rosa Sam Sara "
          "Sofia Tariq Tom Uma Victor Yara Yusuf Zoe").split()
_LAST = ("Abbott Alvarez Andersen Baker Banerjee Becker Bianchi Brooks Castro Chavez Cohen Costa Dalton Diaz "
         "Dubois Evans Fischer Fontaine Garcia Gupta Hansen Haddad Ito Jensen Kato Keller Khan Kim Kowalski Lambert "
         "Larsen Lopez Moreau Muller Murphy Nakamura Novak Ochoa Okafor Olsen Park Petrov Quinn Reyes Rossi Sato "
         "Schmidt Silva Singh Suzuki Tanaka Torres Varga Vogel Wagner Weber Williams Wong Yilmaz Young Zhang").split()


def _people(rng: random.Random, n: int) -> list[str]:
    """n distinct 'First Last' names."""
    seen: set[str] = set()
    out = []
    while len(out) < n:
        name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


_NAME_KINDS = ("person", "company", "product", "subcat", "store", "campaign", "project", "itapp", "kbtitle",
               "costcenter")


class _Builder:
    def __init__(self, rng: random.Random):
        self.rng = rng
        self.people = _people
        self.values: dict[str, list[tuple]] = {}  # table -> rows
        self.cum_weights: dict[tuple[str, str], list[float]] = {}

    def column(self, table: dict, c: dict, n: int, done: dict[str, list]) -> list:
        rng, gen = self.rng, c["gen"]
        null_p = 0.0
        if m := re.search(r"\?(0?\.\d+)$", gen):
            null_p, gen = float(m.group(1)), gen[: m.start()]
        kind, _, arg = gen.partition(":")
        out: list
        if kind == "pk":
            out = list(range(1, n + 1))
        elif kind == "fk":
            target, _, rest = arg.partition(" ")
            if rest.startswith("list:"):
                out = [int(v) for v in rest[5:].split("|")]
            elif target == table["name"]:  # a hierarchy: point at an earlier row
                out = [None] + [rng.randint(1, max(1, min(i, 40))) for i in range(1, n)]
            else:
                parents = len(self.values[target])
                cum = self.cum_weights.setdefault((table["name"], c["name"]), list(itertools.accumulate(
                    rng.lognormvariate(0, 1.1) for _ in range(parents))))
                total = cum[-1]
                out = [bisect.bisect_left(cum, rng.random() * total) + 1 for _ in range(n)]
                out = [min(v, parents) for v in out]
        elif kind == "list":
            out = [_typed(v, c["type"]) for v in arg.split("|")]
        elif kind == "pick":
            vals, cum = _weighted(arg)
            vals = [_typed(v, c["type"]) for v in vals]
            out = [vals[bisect.bisect_left(cum, rng.random() * cum[-1])] for _ in range(n)]
        elif kind in ("int", "money", "real"):
            lo, hi = (float(x) for x in arg.split(".."))
            if kind == "int":
                a, k = int(lo), int(hi) - int(lo) + 1
                out = [a + int(rng.random() * k) for _ in range(n)]
            elif kind == "money":  # log-uniform: many small amounts, a few large ones
                import math

                a, b = math.log(max(lo, 0.5)), math.log(hi)
                out = [round(math.exp(rng.uniform(a, b)), 2) for _ in range(n)]
            else:
                out = [round(rng.uniform(lo, hi), 2) for _ in range(n)]
        elif kind == "date":
            lo, hi = (_START, _END) if not arg else (date(int(arg[:4]), 1, 1), date(int(arg[-4:]), 12, 31))
            first, span = lo.toordinal(), (hi - lo).days + 1
            out = [_iso(first + int(rng.random() * span)) for _ in range(n)]
        elif kind == "seqdate":
            out = [(_START + timedelta(days=i)).isoformat() for i in range(n)]
        elif kind == "weekday":
            out = [date.fromisoformat(d).strftime("%A") for d in done[arg]]
        elif kind == "fy":
            out = [int(d[:4]) - (int(d[5:7]) < 4) for d in done[arg]]
        elif kind == "ts":
            first, span = _START.toordinal(), (_END - _START).days * 86400
            out = [_ts(first, int(rng.random() * span)) for _ in range(n)]
        elif kind == "etl":  # nightly loads
            out = [f"{_iso(_END.toordinal() - int(rng.random() * 30))} 02:{int(rng.random() * 60):02d}:00"
                   for _ in range(n)]
        elif kind == "after":
            col, _, rng_days = arg.partition(":")
            lo, hi = (int(x) for x in rng_days.split(".."))
            out = []
            for v in done[col]:
                if v is None:
                    out.append(None)
                elif len(v) > 10:  # a timestamp: hours later
                    h0, h1 = max(lo, 0) * 24, hi * 24 + 12
                    secs = int(v[11:13]) * 3600 + int(v[14:16]) * 60 + int(v[17:19])
                    out.append(_ts(_ordinal(v[:10]), secs + 3600 * (h0 + int(rng.random() * (h1 - h0 + 1)))))
                else:
                    out.append(_iso(_ordinal(v) + lo + int(rng.random() * (hi - lo + 1))))
        elif kind in _NAME_KINDS:
            out = self.names(kind, n)
        elif kind == "code":
            out = [f"{arg}-{i:06d}" for i in range(1, n + 1)]
        elif kind == "email":
            out = [v.lower().replace(" ", ".").replace("'", "") + f"{i}@example.com" for i, v in enumerate(done[arg])]
        elif kind == "phone":
            out = [f"+1-555-{rng.randint(1000, 9999)}" for _ in range(n)]
        elif kind == "street":
            out = [f"{rng.randint(1, 250)} {rng.choice(_STREETS)} Street" for _ in range(n)]
        elif kind == "flag":
            p = float(arg)
            out = [int(rng.random() < p) for _ in range(n)]
        elif kind == "copy":
            fk_col, _, parent_col = arg.partition(".")
            target = _fk_target(next(x["gen"] for x in table["cols"] if x["name"] == fk_col))
            idx = [x["name"] for x in _BY_NAME[target]["cols"]].index(parent_col)
            parent = self.values[target]
            out = [parent[v - 1][idx] if v else None for v in done[fk_col]]
        elif kind == "const":
            out = [_typed(arg, c["type"])] * n
        else:
            raise ValueError(f"warehouse spec: unknown generator {gen!r} for {table['name']}.{c['name']}")
        if null_p:
            out = [None if rng.random() < null_p else v for v in out]
        return out

    def names(self, kind: str, n: int) -> list:
        """n names of a kind (people, companies, products, stores, ...): a column's values drawn from word lists."""
        rng = self.rng
        if kind == "person":
            out = self.people(rng, n)
        elif kind == "company":
            names = sorted({f"{a} {b}" for a in _COMPANY_A for b in _COMPANY_B})
            out = rng.sample(names, n) if n <= len(names) else [rng.choice(names) for _ in range(n)]
        elif kind == "product":
            names = sorted({f"{b} {a} {x}" for b in _BRANDS for a in _PRODUCT_ADJ for x in _PRODUCT_NOUNS})
            out = rng.sample(names, n)
        elif kind == "subcat":
            out = [_SUBCATS[i % len(_SUBCATS)] for i in range(n)]
        elif kind == "store":
            cities = [r[1] for r in self.values["geo_city"]]
            out = [f"{cities[i % len(cities)]} {_STORE_AREAS[i // len(cities) % len(_STORE_AREAS)]}" for i in range(n)]
        elif kind == "campaign":
            names = sorted({f"{a} {b} {y}" for a in _CAMPAIGN_A for b in _CAMPAIGN_B for y in YEARS})
            out = rng.sample(names, n)
        elif kind == "project":
            names = sorted({f"{a} {b}" for a in _PROJECT_A for b in _PROJECT_B})
            out = rng.sample(names, n)
        elif kind == "itapp":
            out = _IT_APPS[:n]
        elif kind == "kbtitle":
            out = [f"How to {_KB_TOPICS[i % len(_KB_TOPICS)]}" + (f" (part {i // len(_KB_TOPICS) + 1})"
                                                                 if i >= len(_KB_TOPICS) else "") for i in range(n)]
        elif kind == "costcenter":
            depts = "Engineering Sales Marketing Finance HR Operations Support Legal Logistics Manufacturing IT Procurement"
            base = depts.split()
            out = [base[i] if i < len(base) else f"{base[i % len(base)]} {['EMEA', 'Americas', 'APAC'][i // 12 % 3]}"
                   for i in range(n)]
        return out

    def rows(self, table: dict) -> list[tuple]:
        n = table["rows"]
        if n is None:
            n = next(len(c["gen"][5:].split("|")) for c in table["cols"] if c["gen"].startswith("list:"))
        done: dict[str, list] = {}
        for c in table["cols"]:
            done[c["name"]] = self.column(table, c, n, done)
        rows = list(zip(*(done[c["name"]] for c in table["cols"])))
        self.values[table["name"]] = rows
        return rows


def build_warehouse(conn: sqlite3.Connection, rng: random.Random) -> None:
    builder = _Builder(rng)
    for t in TABLES:
        conn.execute(ddl(t))
        rows = builder.rows(t)
        conn.executemany(f"INSERT INTO {t['name']} VALUES ({', '.join('?' * len(t['cols']))})", rows)


# ----------------------------------------------------------------------------------------------- the questions
# Same SQL style as templates.py: aliases on joins, ROUND(..., 2) for money, the ranking value last in top-k.

DEPT = "SELECT department_name FROM hr_department"
WH = "SELECT warehouse_name FROM log_warehouse"
PLANT = "SELECT plant_name FROM mfg_plant"
PRIORITY = ("low", "medium", "high", "urgent")
FY = ("2022", "2023")

TEMPLATES = [
    # simple
    T("simple", ["How many {priority}-priority support tickets are {status}?",
                 "Count the support tickets with priority {priority} and status '{status}'.",
                 "What is the number of {status} tickets of {priority} priority?"],
      "SELECT COUNT(*) FROM sup_ticket WHERE priority = '{priority}' AND status = '{status}'", target=8,
      priority=PRIORITY, status=("open", "closed", "pending", "on hold")),
    T("simple", ["Which freight carriers use the {mode} transport mode?", "List the carriers that ship by {mode}.",
                 "Show the names of carriers whose transport mode is {mode}."],
      "SELECT carrier_name FROM log_carrier WHERE transport_mode = '{mode}'", target=4,
      mode="SELECT DISTINCT transport_mode FROM log_carrier"),
    T("simple", ["How many {etype} employees were hired in {year}?",
                 "Count the employees with employment type {etype} hired during {year}.",
                 "What is the number of {etype} hires in {year}?"],
      "SELECT COUNT(*) FROM hr_employee WHERE employment_type = '{etype}' AND strftime('%Y', hire_date) = '{year}'",
      target=8, etype=("full-time", "part-time", "contractor"), year=("2019", "2020", "2021", "2022", "2023", "2024")),
    T("simple", ["How many purchase orders with status '{status}' have a total above {amount}?",
                 "Count the {status} purchase orders worth more than {amount}.",
                 "What is the number of purchase orders in status {status} with a total amount over {amount}?"],
      "SELECT COUNT(*) FROM proc_purchase_order WHERE status = '{status}' AND total_amount > {amount}", target=8,
      status=("received", "open", "partially received", "cancelled"), amount=(1000, 5000, 20000, 50000)),
    T("simple", ["List the IT incidents of severity {sev} whose root cause was {cause}.",
                 "Which {sev} incidents were caused by {cause}? Give their ids and report times.",
                 "Show id and reported time of {sev} IT incidents with root cause '{cause}'."],
      "SELECT incident_id, reported_at FROM it_incident WHERE severity = '{sev}' AND root_cause = '{cause}'", target=4,
      sev=("P1",), cause="SELECT DISTINCT root_cause FROM it_incident WHERE root_cause IS NOT NULL"),
    # aggregate
    T("aggregate", ["What is the total expense amount per expense category in {year}?",
                    "Sum the expense items by category for {year}.",
                    "For {year}, how much was expensed in each category?"],
      "SELECT category, ROUND(SUM(amount), 2) AS total_amount FROM fin_expense_item "
      "WHERE strftime('%Y', expense_date) = '{year}' GROUP BY category", target=3, year=YEARS),
    T("aggregate", ["How many {mtype} machines does each plant have?", "Count the {mtype} machines per plant.",
                    "For each production plant, what is the number of {mtype} machines?"],
      "SELECT p.plant_name, COUNT(*) AS machine_count FROM mfg_machine AS m JOIN mfg_production_line AS l "
      "ON m.line_id = l.line_id JOIN mfg_plant AS p ON l.plant_id = p.plant_id WHERE m.machine_type = '{mtype}' "
      "GROUP BY p.plant_name", target=7, mtype="SELECT DISTINCT machine_type FROM mfg_machine"),
    T("aggregate", ["What was the average CSAT score of each support team in {year}?",
                    "Show the mean customer satisfaction score per support team for surveys in {year}.",
                    "For {year}, what is the average survey score by support team?"],
      "SELECT t.team_name, ROUND(AVG(s.score), 2) AS avg_score FROM sup_csat_survey AS s JOIN sup_ticket AS k "
      "ON s.ticket_id = k.ticket_id JOIN sup_agent AS a ON k.agent_id = a.agent_id JOIN sup_team AS t "
      "ON a.team_id = t.team_id WHERE strftime('%Y', s.response_date) = '{year}' GROUP BY t.team_name",
      target=3, year=YEARS),
    T("aggregate", ["Which warehouses sent more than {n} shipments in {year}?",
                    "List the warehouses with over {n} outbound shipments in {year}, with their counts.",
                    "Show warehouses that shipped more than {n} times during {year}."],
      "SELECT w.warehouse_name, COUNT(*) AS shipment_count FROM log_shipment AS s JOIN log_warehouse AS w "
      "ON s.warehouse_id = w.warehouse_id WHERE strftime('%Y', s.ship_date) = '{year}' GROUP BY w.warehouse_name "
      "HAVING COUNT(*) > {n}", target=8, n=(20, 50, 80, 120, 200), year=YEARS),
    T("aggregate", ["How many employees of each department completed the {course} course?",
                    "Count the completions of the {course} training per department.",
                    "For each department, how many people finished {course}?"],
      "SELECT d.department_name, COUNT(*) AS completed_count FROM hr_training_enrollment AS te "
      "JOIN hr_employee AS e ON te.employee_id = e.employee_id JOIN hr_department AS d "
      "ON e.department_id = d.department_id JOIN hr_training_course AS c ON te.course_id = c.course_id "
      "WHERE c.course_name = '{course}' AND te.status = 'completed' GROUP BY d.department_name", target=7,
      course="SELECT course_name FROM hr_training_course"),
    # topk
    T("topk", ["Which {k} products had the most units returned in {year}?",
               "List the top {k} products by returned quantity in {year}.",
               "What are the {k} most returned products of {year}?"],
      "SELECT p.product_name, SUM(rl.quantity) AS units_returned FROM sales_return_line AS rl "
      "JOIN sales_return AS r ON rl.return_id = r.return_id JOIN prod_product AS p ON rl.product_id = p.product_id "
      "WHERE strftime('%Y', r.return_date) = '{year}' GROUP BY p.product_name ORDER BY units_returned DESC LIMIT {k}",
      target=8, k=K, year=YEARS),
    T("topk", ["Who were the {k} sales reps with the highest order totals in {year}?",
               "Which {k} sales representatives sold the most in {year}, by order amount?",
               "List the top {k} sales reps by total order amount for {year}."],
      "SELECT sr.rep_name, ROUND(SUM(o.total_amount), 2) AS total_sales FROM sales_order AS o "
      "JOIN sales_rep AS sr ON o.sales_rep_id = sr.sales_rep_id WHERE strftime('%Y', o.order_date) = '{year}' "
      "GROUP BY sr.rep_name ORDER BY total_sales DESC LIMIT {k}", target=8, k=K, year=YEARS),
    T("topk", ["Which {k} marketing campaigns spent the most on {media}?",
               "List the top {k} campaigns by ad spend on {media}.",
               "What are the {k} campaigns with the highest {media} spend?"],
      "SELECT c.campaign_name, ROUND(SUM(a.spend_amount), 2) AS total_spend FROM mkt_ad_spend AS a "
      "JOIN mkt_campaign AS c ON a.campaign_id = c.campaign_id JOIN mkt_channel AS m "
      "ON a.media_channel_id = m.media_channel_id WHERE m.media_channel_name = '{media}' GROUP BY c.campaign_name "
      "ORDER BY total_spend DESC LIMIT {k}", target=8, k=K, media="SELECT media_channel_name FROM mkt_channel"),
    T("topk", ["Which {k} knowledge base articles were viewed most often in {year}?",
               "List the {k} most viewed help articles of {year}.",
               "What are the top {k} knowledge base articles by views in {year}?"],
      "SELECT ka.title, COUNT(*) AS view_count FROM sup_kb_article_view AS v JOIN sup_kb_article AS ka "
      "ON v.article_id = ka.article_id WHERE strftime('%Y', v.view_date) = '{year}' GROUP BY ka.title "
      "ORDER BY view_count DESC LIMIT {k}", target=8, k=K, year=YEARS),
    # join
    T("join", ["List the employees of the {dept} department who completed the {course} course.",
               "Which {dept} employees finished the {course} training?",
               "Show the names of people in {dept} with a completed {course} enrollment."],
      "SELECT DISTINCT e.full_name FROM hr_training_enrollment AS te JOIN hr_employee AS e "
      "ON te.employee_id = e.employee_id JOIN hr_department AS d ON e.department_id = d.department_id "
      "JOIN hr_training_course AS c ON te.course_id = c.course_id WHERE d.department_name = '{dept}' "
      "AND c.course_name = '{course}' AND te.status = 'completed'", target=8, dept=DEPT,
      course="SELECT course_name FROM hr_training_course"),
    T("join", ["What was the total freight invoiced by {carrier} in {year}?",
               "How much did {carrier} invoice us for freight in {year}?",
               "Sum the {year} freight invoice amounts from the carrier {carrier}."],
      "SELECT ROUND(SUM(fi.amount), 2) FROM log_freight_invoice AS fi JOIN log_carrier AS c "
      "ON fi.carrier_id = c.carrier_id WHERE c.carrier_name = '{carrier}' AND strftime('%Y', fi.invoice_date) = '{year}'",
      target=8, carrier="SELECT carrier_name FROM log_carrier", year=YEARS),
    T("join", ["How many work orders were completed on lines of the {plant} plant in {month}?",
               "Count the completed work orders at {plant} planned to start in {month}.",
               "What is the number of {plant} work orders with status completed that started in {month}?"],
      "SELECT COUNT(*) FROM mfg_work_order AS wo JOIN mfg_production_line AS l ON wo.line_id = l.line_id "
      "JOIN mfg_plant AS p ON l.plant_id = p.plant_id WHERE p.plant_name = '{plant}' AND wo.status = 'completed' "
      "AND strftime('%Y-%m', wo.planned_start) = '{ym}'", target=8, plant=PLANT, m=month),
    T("join", ["Which customers from {city} ordered through the {channel} channel in {year}?",
               "List the {city} customers with a {channel} order in {year}.",
               "Show the names of customers in {city} who bought via {channel} during {year}."],
      "SELECT DISTINCT c.customer_name FROM sales_order AS o JOIN sales_customer AS c ON o.customer_id = c.customer_id "
      "JOIN geo_city AS ci ON c.city_id = ci.city_id JOIN sales_channel AS ch ON o.channel_id = ch.channel_id "
      "WHERE ci.city_name = '{city}' AND ch.channel_name = '{channel}' AND strftime('%Y', o.order_date) = '{year}'",
      target=8, city="SELECT city_name FROM geo_city", channel="SELECT channel_name FROM sales_channel", year=YEARS),
    # nested
    T("nested", ["Which {category} suppliers received no purchase order in {year}?",
                 "List the suppliers in the {category} category without purchase orders in {year}.",
                 "Show {category} suppliers that we did not order from during {year}."],
      "SELECT supplier_name FROM proc_supplier WHERE supplier_category = '{category}' AND supplier_id NOT IN "
      "(SELECT supplier_id FROM proc_purchase_order WHERE strftime('%Y', order_date) = '{year}')", target=8,
      category="SELECT DISTINCT supplier_category FROM proc_supplier", year=YEARS),
    T("nested", ["Which employees in {dept} earn more than the company-wide average base salary?",
                 "List {dept} employees whose base salary is above the average of all employees.",
                 "Show the {dept} staff paid more than the average employee, with their salaries."],
      "SELECT e.full_name, e.base_salary FROM hr_employee AS e JOIN hr_department AS d "
      "ON e.department_id = d.department_id WHERE d.department_name = '{dept}' "
      "AND e.base_salary > (SELECT AVG(base_salary) FROM hr_employee)", target=8, dept=DEPT),
    T("nested", ["How many support tickets were escalated more than {n} times?",
                 "Count the tickets with over {n} escalations.",
                 "What is the number of tickets that were escalated more than {n} times?"],
      "SELECT COUNT(*) FROM (SELECT ticket_id FROM sup_escalation GROUP BY ticket_id HAVING COUNT(*) > {n})",
      target=3, n=(1, 2, 3)),
    T("nested", ["Which business applications had more {sev} incidents than the average application?",
                 "List the applications with an above-average number of {sev} incidents.",
                 "Show applications whose count of {sev} IT incidents exceeds the per-application average."],
      "WITH counts AS (SELECT application_id, COUNT(*) AS n FROM it_incident WHERE severity = '{sev}' "
      "GROUP BY application_id) SELECT a.application_name, c.n AS incident_count FROM it_application AS a "
      "JOIN counts AS c ON a.application_id = c.application_id WHERE c.n > (SELECT AVG(n) FROM counts)", target=4,
      sev=("P1", "P2", "P3", "P4")),
    T("nested", ["Which products in the {category} category were never put in a web shop cart?",
                 "List the {category} products that no cart ever contained.",
                 "Show {category} products with no cart items at all."],
      "SELECT p.product_name FROM prod_product AS p JOIN prod_subcategory AS s ON p.subcategory_id = s.subcategory_id "
      "JOIN prod_category AS c ON s.category_id = c.category_id WHERE c.category_name = '{category}' "
      "AND p.product_id NOT IN (SELECT product_id FROM web_cart_item)", target=8,
      category="SELECT category_name FROM prod_category"),
    # date
    T("date", ["How many shipments shipped in {month} were delivered after their promised date?",
               "Count the late deliveries among shipments sent in {month}.",
               "What is the number of shipments from {month} that arrived later than promised?"],
      "SELECT COUNT(*) FROM log_shipment WHERE strftime('%Y-%m', ship_date) = '{ym}' AND delivered_date > promised_date",
      target=8, m=month),
    T("date", ["How many {ltype} requests started between {start} and {end}?",
               "Count the leave requests of type {ltype} starting from {start} to {end}.",
               "What is the number of {ltype} leave requests with a start date between {start} and {end}?"],
      "SELECT COUNT(*) FROM hr_leave_request AS lr JOIN hr_leave_type AS lt ON lr.leave_type_id = lt.leave_type_id "
      "WHERE lt.leave_type_name = '{ltype}' AND lr.start_date BETWEEN '{start}' AND '{end}'", target=8,
      ltype=("Vacation", "Sick Leave", "Parental Leave", "Unpaid Leave"), r=date_range),
    T("date", ["On average, how many days did it take to resolve {priority}-priority tickets created in {year}?",
               "What was the mean resolution time in days of {priority} tickets opened in {year}?",
               "Compute the average days from creation to resolution for {year} tickets of {priority} priority."],
      "SELECT ROUND(AVG(julianday(resolved_at) - julianday(created_at)), 2) FROM sup_ticket "
      "WHERE priority = '{priority}' AND strftime('%Y', created_at) = '{year}' AND resolved_at IS NOT NULL",
      target=8, priority=PRIORITY, year=YEARS),
    T("date", ["How many customer invoices issued in {quarter} were paid after their due date?",
               "Count the invoices from {quarter} that were paid late.",
               "What is the number of {quarter} invoices whose payment came after the due date?"],
      "SELECT COUNT(*) FROM fin_invoice WHERE invoice_date BETWEEN '{q_start}' AND '{q_end}' AND paid_date > due_date",
      target=8, q=quarter),
    # percent
    T("percent", ["What percentage of the orders placed in {year} were returned?",
                  "What share of {year} orders had a return?", "In {year}, what percent of orders came back as returns?"],
      "SELECT ROUND(100.0 * COUNT(DISTINCT r.order_id) / (SELECT COUNT(*) FROM sales_order "
      "WHERE strftime('%Y', order_date) = '{year}'), 2) FROM sales_return AS r JOIN sales_order AS o "
      "ON r.order_id = o.order_id WHERE strftime('%Y', o.order_date) = '{year}'", target=3, year=YEARS),
    T("percent", ["What percentage of quality inspections at the {plant} plant failed?",
                  "What share of {plant} inspections had the result fail?",
                  "Among inspections of work orders at {plant}, what percent failed?"],
      "SELECT ROUND(100.0 * SUM(CASE WHEN qi.result = 'fail' THEN 1 ELSE 0 END) / COUNT(*), 2) "
      "FROM mfg_quality_inspection AS qi JOIN mfg_work_order AS wo ON qi.work_order_id = wo.work_order_id "
      "JOIN mfg_production_line AS l ON wo.line_id = l.line_id JOIN mfg_plant AS p ON l.plant_id = p.plant_id "
      "WHERE p.plant_name = '{plant}'", target=7, plant=PLANT),
    T("percent", ["What percentage of the emails sent for the campaign {campaign} were opened?",
                  "What share of {campaign} emails got an open event?",
                  "For the {campaign} campaign, what percent of sent emails were opened?"],
      "SELECT ROUND(100.0 * COUNT(DISTINCT ee.email_send_id) / (SELECT COUNT(*) FROM mkt_email_send AS s2 "
      "JOIN mkt_campaign AS c2 ON s2.campaign_id = c2.campaign_id WHERE c2.campaign_name = '{campaign}'), 2) "
      "FROM mkt_email_event AS ee JOIN mkt_email_send AS es ON ee.email_send_id = es.email_send_id "
      "JOIN mkt_campaign AS c ON es.campaign_id = c.campaign_id WHERE c.campaign_name = '{campaign}' "
      "AND ee.event_type = 'open'", target=8, campaign="SELECT campaign_name FROM mkt_campaign"),
    T("percent", ["What percentage of {dept} employees are enrolled in the {plan} benefit plan?",
                  "What share of the {dept} department has {plan} coverage?",
                  "Among {dept} employees, what percent have a {plan} benefit enrollment?"],
      "SELECT ROUND(100.0 * COUNT(DISTINCT be.employee_id) / (SELECT COUNT(*) FROM hr_employee AS e2 "
      "JOIN hr_department AS d2 ON e2.department_id = d2.department_id WHERE d2.department_name = '{dept}'), 2) "
      "FROM hr_benefit_enrollment AS be JOIN hr_benefit_plan AS bp ON be.benefit_plan_id = bp.benefit_plan_id "
      "JOIN hr_employee AS e ON be.employee_id = e.employee_id JOIN hr_department AS d "
      "ON e.department_id = d.department_id WHERE d.department_name = '{dept}' AND bp.plan_name = '{plan}'",
      target=8, dept=DEPT, plan="SELECT plan_name FROM hr_benefit_plan"),
    # macro
    T("macro", ["What was the total amount invoiced to customers in each fiscal quarter of FY{fy}?",
                "Sum the customer invoice amounts per fiscal quarter for fiscal year {fy}.",
                "Show the invoiced total by fiscal quarter in FY{fy}."],
      "SELECT fiscal_quarter(invoice_date) AS quarter, ROUND(SUM(amount), 2) AS total_invoiced FROM fin_invoice "
      "WHERE fiscal_quarter(invoice_date) LIKE 'FY{fy}-%' GROUP BY quarter ORDER BY quarter", target=2, fy=FY),
    T("macro", ["On average, how many business days did it take to resolve {priority} tickets created in {year}?",
                "What was the mean number of weekdays to resolve a {priority}-priority ticket opened in {year}?",
                "Compute the average resolution time in business days for {priority} tickets from {year}."],
      "SELECT ROUND(AVG(business_days(date(created_at), date(resolved_at))), 2) FROM sup_ticket "
      "WHERE priority = '{priority}' AND strftime('%Y', created_at) = '{year}' AND resolved_at IS NOT NULL",
      target=8, priority=PRIORITY, year=YEARS),
    T("macro", ["What was the total of vendor invoices without tax in fiscal quarter {fq}?",
                "Sum the net amounts (tax removed) of vendor invoices received in {fq}.",
                "How much did vendors invoice us in {fq}, excluding tax?"],
      "SELECT ROUND(SUM(net_amount(gross_amount, tax_rate)), 2) FROM fin_vendor_invoice "
      "WHERE fiscal_quarter(invoice_date) = '{fq}'", target=8,
      fq="SELECT DISTINCT fiscal_quarter(invoice_date) FROM fin_vendor_invoice"),
    T("macro", ["How many shipments left the {warehouse} warehouse in each fiscal quarter of FY{fy}?",
                "Count the shipments from {warehouse} per fiscal quarter in fiscal year {fy}.",
                "Show the number of {warehouse} shipments by fiscal quarter for FY{fy}."],
      "SELECT fiscal_quarter(s.ship_date) AS quarter, COUNT(*) AS shipment_count FROM log_shipment AS s "
      "JOIN log_warehouse AS w ON s.warehouse_id = w.warehouse_id WHERE w.warehouse_name = '{warehouse}' "
      "AND fiscal_quarter(s.ship_date) LIKE 'FY{fy}-%' GROUP BY quarter ORDER BY quarter", target=8, warehouse=WH,
      fy=FY),
]
