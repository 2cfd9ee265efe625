"""Deterministic sample CRM/ERP exports with the quirks of the real ones.

``generate(out, scale=1)`` writes one *history* batch (everything up to the day before
``start_date``) and, with ``days=N``, N daily increments: each day brings the previous day's
orders, new customers (and some changed ones), new product cost versions on some days, and now
and then a re-delivered file or late duplicate sales lines. Scale factor 1 ≈ 18.5k customers,
~400 product versions, ~60k sales lines; every part of the output depends only on ``seed``,
``scale`` and the dates, and the history does not change when ``days`` changes.

Quirks produced (rates roughly those of the real exports): CRLF endings, some files without a
trailing newline, empty strings for missing values, stray spaces in names and codes, duplicate and
null customer ids, ``NAS``-prefixed ERP ids, ``-`` in location ids, mixed country and gender codes,
future birthdates, ``yyyyMMdd`` integer dates that are 0 or of the wrong length, negative / zero /
null / inconsistent sales and prices, product end dates before their start, product names with
commas (quoted), product categories missing from the ERP category list.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from spark_jobs.sources import SOURCES

DEFAULT_START_DATE = date(2014, 1, 29)
HISTORY_START = date(2010, 12, 29)

CATEGORIES = [
    ("AC_BR", "Accessories", "Bike Racks", "Yes"),
    ("AC_BS", "Accessories", "Bike Stands", "No"),
    ("AC_BC", "Accessories", "Bottles and Cages", "No"),
    ("AC_CL", "Accessories", "Cleaners", "Yes"),
    ("AC_FE", "Accessories", "Fenders", "No"),
    ("AC_HE", "Accessories", "Helmets", "Yes"),
    ("AC_HP", "Accessories", "Hydration Packs", "No"),
    ("AC_LI", "Accessories", "Lights", "Yes"),
    ("AC_LO", "Accessories", "Locks", "Yes"),
    ("AC_PA", "Accessories", "Panniers", "No"),
    ("AC_PU", "Accessories", "Pumps", "Yes"),
    ("AC_TT", "Accessories", "Tires and Tubes", "Yes"),
    ("BI_MB", "Bikes", "Mountain Bikes", "Yes"),
    ("BI_RB", "Bikes", "Road Bikes", "Yes"),
    ("BI_TB", "Bikes", "Touring Bikes", "Yes"),
    ("CL_BS", "Clothing", "Bib-Shorts", "No"),
    ("CL_CA", "Clothing", "Caps", "No"),
    ("CL_GL", "Clothing", "Gloves", "No"),
    ("CL_JE", "Clothing", "Jerseys", "No"),
    ("CL_SH", "Clothing", "Shorts", "No"),
    ("CL_SO", "Clothing", "Socks", "No"),
    ("CL_TI", "Clothing", "Tights", "No"),
    ("CL_VE", "Clothing", "Vests", "No"),
    ("CO_BB", "Components", "Bottom Brackets", "Yes"),
    ("CO_BR", "Components", "Brakes", "Yes"),
    ("CO_CS", "Components", "Chains", "Yes"),
    ("CO_CR", "Components", "Cranksets", "Yes"),
    ("CO_DE", "Components", "Derailleurs", "Yes"),
    ("CO_FO", "Components", "Forks", "Yes"),
    ("CO_HB", "Components", "Handlebars", "Yes"),
    ("CO_HS", "Components", "Headsets", "Yes"),
    ("CO_MF", "Components", "Mountain Frames", "Yes"),
    ("CO_PD", "Components", "Pedals", "Yes"),
    ("CO_RF", "Components", "Road Frames", "Yes"),
    ("CO_SA", "Components", "Saddles", "Yes"),
    ("CO_TF", "Components", "Touring Frames", "Yes"),
    ("CO_WH", "Components", "Wheels", "Yes"),
]
UNLISTED_CATEGORY = "CO_PE"  # used by some products, absent from PX_CAT_G1V2 (as in the real data)
FIRST_NAMES = [
    "Jon",
    "Elizabeth",
    "Eugene",
    "Ruben",
    "Christy",
    "Elizabeth",
    "Julio",
    "Janet",
    "Marco",
    "Rob",
    "Shannon",
    "Jacquelyn",
    "Curtis",
    "Lauren",
    "Ian",
    "Sydney",
    "Chloe",
    "Wyatt",
    "Shannon",
    "Clarence",
    "Luke",
    "Jordan",
    "Destiny",
    "Ethan",
    "Seth",
    "Russell",
    "Alejandro",
    "Harold",
    "Jessie",
    "Jill",
]
LAST_NAMES = [
    "Yang",
    "Huang",
    "Zhu",
    "Johnson",
    "Ruiz",
    "Alvarez",
    "Mehta",
    "Verhoff",
    "Carlson",
    "Suarez",
    "Lu",
    "Walker",
    "Jenkins",
    "Chapman",
    "Moreno",
    "Murphy",
    "Perez",
    "Garcia",
    "Hill",
    "Lopez",
]
COUNTRIES = [
    ("Australia", 20),
    ("United States", 14),
    ("US", 4),
    ("USA", 6),
    ("Canada", 8),
    ("United Kingdom", 10),
    ("Germany", 8),
    ("DE", 3),
    ("France", 10),
    ("", 1),
    (" Germany", 1),
]
MODEL_WORDS = {
    "BI": ["Mountain-", "Road-", "Touring-"],
    "AC": ["Sport-", "All-Purpose ", "Hitch Rack-"],
    "CL": ["Classic ", "Long-Sleeve ", "Racing "],
    "CO": ["HL ", "ML ", "LL "],
}
COLOURS = ["Black", "Red", "Silver", "Yellow", "Blue"]


@dataclass
class Product:
    prd_key: str  # full key, e.g. CO-RF-FR-R92B-58 (first 5 chars = category id with '-')
    name: str
    line: str
    versions: list[tuple[int, date, int | None]] = field(default_factory=list)  # (prd_id, start, cost)

    @property
    def sales_key(self) -> str:
        return self.prd_key[6:]


@dataclass
class World:
    customers: list[int]
    products: list[Product]
    next_customer_id: int
    next_product_id: int
    next_order: int


def _chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def _yyyymmdd(d: date) -> str:
    return d.strftime("%Y%m%d")


def _write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]], *, trailing_newline: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(header)]
    for row in rows:
        lines.append(",".join("" if v is None else str(v) for v in row))
    path.write_bytes(("\r\n".join(lines) + ("\r\n" if trailing_newline else "")).encode("utf-8"))


def _quote(value: str) -> str:
    return '"' + value.replace('"', '""') + '"' if ("," in value or '"' in value) else value


def _messy(rng: random.Random, value: str, p: float = 0.02) -> str:
    """Sometimes add stray leading/trailing spaces, as the CRM export does."""
    if _chance(rng, p):
        return rng.choice([" ", "  "]) + value if _chance(rng, 0.5) else value + rng.choice([" ", "  "])
    return value


# --- customers -------------------------------------------------------------------------------


def _customer_rows(rng: random.Random, cst_id: int | None, created: date) -> list[object]:
    key = f"AW{cst_id:08d}" if cst_id is not None else rng.choice(["PO25", "SF566", "13451235", "A01Ass"])
    marital = rng.choice(["S", "M", "S", "M", "", " s", "M "]) if _chance(rng, 0.05) else rng.choice(["S", "M"])
    gender = rng.choice(["F", "M"]) if _chance(rng, 0.75) else rng.choice(["", "", " m", "f "])
    return [
        "" if cst_id is None else cst_id,
        key,
        _messy(rng, rng.choice(FIRST_NAMES)) if _chance(rng, 0.995) else "",
        _messy(rng, rng.choice(LAST_NAMES)) if _chance(rng, 0.995) else "",
        marital,
        gender,
        created.isoformat(),
    ]


def _erp_rows(rng: random.Random, cst_id: int, batch_date: date) -> tuple[list[object], list[object]]:
    key = f"AW{cst_id:08d}"
    cid = "NAS" + key if _chance(rng, 0.5) else key
    if _chance(rng, 0.003):  # birthdate in the future
        bdate = batch_date + timedelta(days=rng.randint(30, 9000))
    elif _chance(rng, 0.002):  # implausibly old
        bdate = date(rng.randint(1900, 1923), rng.randint(1, 12), rng.randint(1, 28))
    else:
        bdate = date(rng.randint(1924, 1986), rng.randint(1, 12), rng.randint(1, 28))
    gen = (
        rng.choice(["F", "M", "Female", "Male", "", " F", "Male ", "female"])
        if _chance(rng, 0.4)
        else rng.choice(["F", "M"])
    )
    country = rng.choices([c for c, _ in COUNTRIES], weights=[w for _, w in COUNTRIES])[0]
    return [cid, bdate.isoformat(), gen], [f"AW-{cst_id:08d}", country]


# --- products --------------------------------------------------------------------------------


def _new_product(rng: random.Random, n: int) -> Product:
    cat_id = UNLISTED_CATEGORY if n % 50 == 7 or _chance(rng, 0.01) else rng.choice(CATEGORIES)[0]
    group = cat_id[:2]
    model = f"{rng.choice('BFHRWTSC')}{rng.choice('BFHRWTSC')}-{rng.choice('MRTL')}{n % 1000:03d}"
    size = rng.choice(["38", "42", "44", "48", "52", "58", "62", "S", "M", "L", "XL"])
    prd_key = f"{cat_id.replace('_', '-')}-{model}-{size}"
    sep = ", " if n % 37 == 5 or _chance(rng, 0.03) else "- "  # some names carry a comma → quoted field
    name = f"{rng.choice(MODEL_WORDS[group])}{n:03d} {rng.choice(COLOURS)}{sep}{size}"
    line = {"BI": rng.choice("MRT"), "AC": "S", "CL": "S", "CO": rng.choice("MRT")}[group]
    if _chance(rng, 0.05):
        line = rng.choice(["", " ", line + " ", line.lower()])
    return Product(prd_key, name, line)


def _add_version(rng: random.Random, product: Product, prd_id: int, start: date) -> None:
    base = product.versions[-1][2] if product.versions and product.versions[-1][2] else rng.randint(2, 1900)
    cost = None if _chance(rng, 0.01) else max(1, int(base * rng.uniform(0.9, 1.25)))
    product.versions.append((prd_id, start, cost))


def _product_rows(
    rng: random.Random, product: Product, versions: Sequence[tuple[int, date, int | None]]
) -> list[list[object]]:
    rows = []
    for prd_id, start, cost in versions:
        later = [v[1] for v in product.versions if v[1] > start]
        if later and _chance(rng, 0.6):  # unreliable end date: before the start, as in the source
            end = date(start.year - rng.randint(1, 4), rng.randint(1, 12), 28).isoformat()
        elif later:
            end = (min(later) - timedelta(days=1)).isoformat()
        else:
            end = ""
        rows.append(
            [
                prd_id,
                product.prd_key,
                _quote(product.name),
                "" if cost is None else cost,
                product.line,
                start.isoformat(),
                end,
            ]
        )
    return rows


def _price_at(product: Product, day: date) -> int:
    valid = [c for _, s, c in product.versions if s <= day and c] or [c for _, _, c in product.versions if c] or [10]
    return max(1, int(valid[-1] * 1.6))


# --- sales -----------------------------------------------------------------------------------


def _sales_lines(rng: random.Random, world: World, day: date, n_lines: int) -> list[list[object]]:
    rows: list[list[object]] = []
    while len(rows) < n_lines:
        order = f"SO{world.next_order}"
        world.next_order += 1
        cust = rng.choice(world.customers) if _chance(rng, 0.9995) else 99_000_000 + rng.randint(0, 999)
        for product in rng.sample(world.products, k=min(len(world.products), rng.choice([1, 1, 1, 2, 2, 3, 4]))):
            qty = 1 if _chance(rng, 0.95) else rng.randint(2, 4)
            price: int | None = _price_at(product, day)
            sales: int | None = qty * price  # type: ignore[operator]
            order_dt, ship_dt, due_dt = _yyyymmdd(day), _yyyymmdd(day + timedelta(7)), _yyyymmdd(day + timedelta(12))
            if _chance(rng, 0.0006):
                order_dt = rng.choice(["0", str(rng.randint(3000, 99999))])
            if _chance(rng, 0.003):
                sales = rng.choice([None, 0, -abs(sales or 1), (sales or 1) + rng.randint(1, 50)])
            if _chance(rng, 0.002):
                price = rng.choice([None, -abs(price or 1), 0])
            rows.append(
                [
                    order,
                    product.sales_key,
                    cust,
                    order_dt,
                    ship_dt,
                    due_dt,
                    "" if sales is None else sales,
                    qty,
                    "" if price is None else price,
                ]
            )
            if len(rows) >= n_lines:
                break
    return rows


# --- batches ---------------------------------------------------------------------------------


def _write_batch(out: Path, batch: date, files: dict[str, list[list[object]]]) -> None:
    for table, rows in files.items():
        source = SOURCES[table]
        path = out / batch.isoformat() / source.system / source.file_name
        # Some exports end without a trailing newline (deterministic per file).
        _write_csv(path, source.columns, rows, trailing_newline=(len(table) + batch.day) % 3 != 0)


def generate(
    out: Path, *, scale: float = 1.0, start_date: date = DEFAULT_START_DATE, days: int = 0, seed: int = 42
) -> list[date]:
    """Write the history batch at ``start_date`` and ``days`` daily increments; return the batch dates."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if start_date <= HISTORY_START + timedelta(days=30):
        raise ValueError(f"start_date must be after {HISTORY_START + timedelta(days=30)}, got {start_date}")
    rng = random.Random(f"{seed}:{scale}:history")
    n_customers = max(20, round(18_484 * scale))
    n_products = max(8, round(295 * scale))
    n_sales = max(50, round(60_398 * scale))
    history_days = (start_date - HISTORY_START).days

    # Products with 1-3 cost versions starting between 2003 and shortly before the batch.
    products, prd_id = [], 210
    for n in range(n_products):
        product = _new_product(rng, n)
        first = HISTORY_START - timedelta(days=rng.randint(-700, 2700))
        for k in range(rng.choices([1, 2, 3], weights=[75, 17, 8])[0]):
            start = first + timedelta(days=365 * k)
            if start < start_date:
                _add_version(rng, product, prd_id, start)
                prd_id += 1
        if product.versions:
            products.append(product)

    # Customers (+ a few duplicate ids with older records, a few without id).
    customers = list(range(11_000, 11_000 + n_customers))
    cust_rows, az12_rows, loc_rows = [], [], []
    for cst_id in customers:
        created = HISTORY_START - timedelta(days=rng.randint(0, 700))
        if _chance(rng, 0.001):  # an older duplicate of the same customer
            cust_rows.append(_customer_rows(rng, cst_id, created - timedelta(days=rng.randint(1, 300))))
        cust_rows.append(_customer_rows(rng, cst_id, created))
        if _chance(rng, 0.999):
            az, loc = _erp_rows(rng, cst_id, start_date)
            az12_rows.append(az)
            loc_rows.append(loc)
    for _ in range(max(1, round(n_customers * 0.0003))):
        cust_rows.insert(rng.randrange(len(cust_rows)), _customer_rows(rng, None, HISTORY_START))

    world = World(customers, products, 11_000 + n_customers, prd_id, 43_697)
    # Sales grow over time: weight each day by its position.
    weights = [1 + 2 * i / history_days for i in range(history_days)]
    total_w = sum(weights)
    sales_rows: list[list[object]] = []
    for i, w in enumerate(weights):
        day = HISTORY_START + timedelta(days=i)
        n = int(n_sales * w / total_w + rng.random())
        if n:
            sales_rows.extend(_sales_lines(rng, world, day, n))

    _write_batch(
        out,
        start_date,
        {
            "crm_cust_info": cust_rows,
            "crm_prd_info": [r for p in products for r in _product_rows(rng, p, p.versions)],
            "crm_sales_details": sales_rows,
            "erp_cust_az12": az12_rows,
            "erp_loc_a101": loc_rows,
            "erp_px_cat_g1v2": [list(c) for c in CATEGORIES],
        },
    )
    batches = [start_date]

    daily_sales = max(3, round(n_sales / history_days * 1.5))
    daily_customers = max(1, round(n_customers / history_days))
    previous_sales: list[list[list[object]]] = []
    for k in range(1, days + 1):
        batch = start_date + timedelta(days=k)
        day = batch - timedelta(days=1)
        drng = random.Random(f"{seed}:{scale}:day:{batch.isoformat()}")
        files: dict[str, list[list[object]]] = {}
        new_ids = list(range(world.next_customer_id, world.next_customer_id + drng.randint(0, 2 * daily_customers)))
        world.next_customer_id += len(new_ids)
        changed = drng.sample(world.customers, k=min(len(world.customers), drng.randint(0, 2)))
        cust = [_customer_rows(drng, c, day) for c in new_ids + changed]
        if cust:
            files["crm_cust_info"] = cust
            erp = [_erp_rows(drng, c, batch) for c in new_ids]
            if erp:
                files["erp_cust_az12"] = [a for a, _ in erp]
                files["erp_loc_a101"] = [loc for _, loc in erp]
        world.customers.extend(new_ids)
        if drng.random() < 0.3:  # new cost versions for a few products
            new_rows = []
            for product in drng.sample(world.products, k=min(len(world.products), drng.randint(1, 3))):
                _add_version(drng, product, world.next_product_id, batch)
                world.next_product_id += 1
                new_rows.extend(_product_rows(drng, product, product.versions[-1:]))
            files["crm_prd_info"] = new_rows
        sales = _sales_lines(drng, world, day, drng.randint(daily_sales // 2, daily_sales * 3 // 2))
        delivered = list(sales)
        if previous_sales and drng.random() < 0.15:  # yesterday's file re-delivered with today's
            delivered = previous_sales[-1] + delivered
        if len(previous_sales) >= 2:  # late duplicates of lines sent two days ago
            delivered += [r for r in previous_sales[-2] if drng.random() < 0.01]
        files["crm_sales_details"] = delivered
        previous_sales.append(sales)
        _write_batch(out, batch, files)
        batches.append(batch)
    return batches
