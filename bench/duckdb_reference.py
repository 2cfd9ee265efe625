"""A single-node reference: the pipeline's bronze, silver and gold rules for one batch, in DuckDB SQL.

Same landing files (one batch's CSVs), same rules, Delta tables written with ``deltalake``:
* bronze: physical lines split on ``\\n`` (CRLF stripped, blank lines and the header dropped), the
  CSV dialect of ``spark_jobs/bronze/parse.py`` and its quarantine reasons, first that applies;
* silver: rules S1–S18 of ``spark_jobs/silver/transforms.py``, the ``quarantine`` expectations of
  ``spark_jobs/silver/tables.py``, the latest row per key by the table's recency, product end dates
  from the next version (S9) and the ``fail`` output check on them;
* gold: ``dim_customers``, SCD2 ``dim_products`` (valid_from/valid_to/is_current), ``fact_sales``
  linked to the product version valid on the order date with the earliest-version fallback, and
  the two BI views, as in ``spark_jobs/gold/transforms.py``.

It is the first load (one batch on empty tables), so no MERGE is needed: silver is the batch's
latest row per key. Differences that are inherent, not rules: surrogate keys are DuckDB's 64-bit
``hash`` of the natural key instead of Spark's ``xxhash64`` (the equivalence test compares natural
keys); the dq_metrics rows and the warn-only expectations are not computed (they change no row).

``python -m bench.duckdb_reference --landing DIR --day YYYY-MM-DD --out DIR`` runs it once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from spark_jobs.landing import header_positions, inspect_file
from spark_jobs.silver.tables import SILVER_TABLES
from spark_jobs.sources import SOURCES
from spark_jobs.target import LAYERS

# SQL text of the same parsers as spark_jobs/parsing.py (shape first, then a total conversion).
_INT = r"[+-]?[0-9]+"


def _trim(c: str) -> str:
    return f"trim({c}, ' ')"  # Spark's trim: spaces only


def _text(c: str) -> str:
    return f"nullif({_trim(c)}, '')"


def _int(c: str, type_: str = "INTEGER") -> str:
    # DuckDB's TRY_CAST('1.5' AS INTEGER) rounds to 2; Spark's try_cast gives NULL: the shape decides.
    return f"CASE WHEN regexp_full_match({_trim(c)}, '{_INT}') THEN TRY_CAST({_trim(c)} AS {type_}) END"


def _date(c: str, shape: str, fmt: str) -> str:
    t = _trim(c)
    return (
        f"CASE WHEN regexp_full_match({t}, '{shape}') AND substr({t}, 1, 4) <> '0000' "
        f"THEN CAST(try_strptime({t}, '{fmt}') AS DATE) END"
    )


def _iso_date(c: str) -> str:
    return _date(c, "[0-9]{4}-[0-9]{2}-[0-9]{2}", "%Y-%m-%d")


def _yyyymmdd(c: str) -> str:
    return _date(c, "[0-9]{8}", "%Y%m%d")


def _code(c: str, mapping: dict[str, str], default: str = "n/a") -> str:
    whens = " ".join(f"WHEN '{k}' THEN '{v}'" for k, v in mapping.items())
    return f"CASE upper({_trim(c)}) {whens} ELSE '{default}' END"


def _clean_sql(run_date: date) -> dict[str, str]:
    """Per table: the cleaned columns (S1–S18) as a SELECT list over ``bronze_<table>``."""
    sales, qty, price = _int("sls_sales", "BIGINT"), _int("sls_quantity"), _int("sls_price", "BIGINT")
    # try_multiply: NULL on overflow (HUGEINT holds any BIGINT product)
    expected = (
        f"(CASE WHEN abs(CAST({qty} AS HUGEINT) * abs(CAST({price} AS HUGEINT))) <= 9223372036854775807 "
        f"THEN CAST(CAST({qty} AS HUGEINT) * abs(CAST({price} AS HUGEINT)) AS BIGINT) END)"
    )
    fixed_sales = (
        f"CASE WHEN ({price}) IS NULL THEN {sales} "
        f"WHEN ({sales}) IS NULL OR ({sales}) <= 0 OR ({sales}) <> {expected} THEN {expected} ELSE {sales} END"
    )
    derived_price = f"CASE WHEN ({qty}) <> 0 THEN CAST(trunc(({sales}) / ({qty})) AS BIGINT) END"
    fixed_price = f"CASE WHEN ({price}) IS NULL OR ({price}) <= 0 THEN {derived_price} ELSE {price} END"
    key = _trim("prd_key")
    cid_az = _trim("cid")
    country = _trim("cntry")
    bdate = _iso_date("bdate")
    return {
        "crm_cust_info": f"""
            {_int("cst_id")} AS cst_id, {_text("cst_key")} AS cst_key,
            {_text("cst_firstname")} AS cst_firstname, {_text("cst_lastname")} AS cst_lastname,
            {_code("cst_marital_status", {"S": "Single", "M": "Married"})} AS cst_marital_status,
            {_code("cst_gndr", {"F": "Female", "M": "Male"})} AS cst_gndr,
            {_iso_date("cst_create_date")} AS cst_create_date""",
        "crm_prd_info": f"""
            {_int("prd_id")} AS prd_id, replace(substr({key}, 1, 5), '-', '_') AS cat_id,
            CASE WHEN length({key}) > 6 THEN substr({key}, 7) END AS prd_key, {_text("prd_nm")} AS prd_nm,
            coalesce({_int("prd_cost")}, 0) AS prd_cost,
            {_code("prd_line", {"M": "Mountain", "R": "Road", "S": "Other Sales", "T": "Touring"})} AS prd_line,
            {_iso_date("prd_start_dt")} AS prd_start_dt""",
        "crm_sales_details": f"""
            {_text("sls_ord_num")} AS sls_ord_num, {_text("sls_prd_key")} AS sls_prd_key,
            {_int("sls_cust_id")} AS sls_cust_id, {_yyyymmdd("sls_order_dt")} AS sls_order_dt,
            {_yyyymmdd("sls_ship_dt")} AS sls_ship_dt, {_yyyymmdd("sls_due_dt")} AS sls_due_dt,
            {fixed_sales} AS sls_sales, {qty} AS sls_quantity, {fixed_price} AS sls_price""",
        "erp_cust_az12": f"""
            CASE WHEN starts_with({cid_az}, 'NAS') THEN substr({cid_az}, 4) ELSE {cid_az} END AS cid,
            CASE WHEN {bdate} <= DATE '{run_date.isoformat()}' THEN {bdate} END AS bdate,
            {_code("gen", {"F": "Female", "FEMALE": "Female", "M": "Male", "MALE": "Male"})} AS gen""",
        "erp_loc_a101": f"""
            replace({_trim("cid")}, '-', '') AS cid,
            CASE WHEN {country} = 'DE' THEN 'Germany' WHEN {country} IN ('US', 'USA') THEN 'United States'
                 WHEN {country} IS NULL OR {country} = '' THEN 'n/a' ELSE {country} END AS cntry""",
        "erp_px_cat_g1v2": ", ".join(f"{_text(c)} AS {c}" for c in SOURCES["erp_px_cat_g1v2"].bronze_columns),
    }


# The quarantine expectations of spark_jobs/silver/tables.py (name, condition; true = good).
QUARANTINE: dict[str, tuple[tuple[str, str], ...]] = {
    "crm_cust_info": (("cst_id_present", "cst_id IS NOT NULL"),),
    "crm_prd_info": (
        ("prd_id_present", "prd_id IS NOT NULL"),
        ("prd_key_present", "prd_key IS NOT NULL"),
        ("prd_start_dt_present", "prd_start_dt IS NOT NULL"),
    ),
    "crm_sales_details": (
        ("sls_ord_num_present", "sls_ord_num IS NOT NULL"),
        ("sls_prd_key_present", "sls_prd_key IS NOT NULL"),
        ("sls_cust_id_present", "sls_cust_id IS NOT NULL"),
        ("sls_quantity_positive", "sls_quantity > 0"),
        (
            "sales_equals_quantity_times_price",
            "sls_sales > 0 AND CAST(sls_sales AS HUGEINT) = CAST(sls_quantity AS HUGEINT) * sls_price",
        ),
    ),
    "erp_cust_az12": (("cid_present", "cid IS NOT NULL"),),
    "erp_loc_a101": (("cid_present", "cid IS NOT NULL"),),
    "erp_px_cat_g1v2": (("id_present", "id IS NOT NULL"),),
}
KEYS = {name: spec.keys for name, spec in SILVER_TABLES.items()}  # the keys the pipeline declares
_LATEST_DELIVERY = ("_batch_date DESC", "_line_number DESC")
RECENCY = {name: _LATEST_DELIVERY for name in KEYS} | {
    "crm_cust_info": ("coalesce(cst_create_date, DATE '0001-01-01') DESC", *_LATEST_DELIVERY)
}
_FIELD_REGEX = r'(?:^|,)("(?:[^"]|"")*"|[^,]*)'


def _sk(*parts: str) -> str:
    """A BIGINT surrogate key: DuckDB's 64-bit hash of the natural key, shifted into BIGINT range."""
    return f"CAST(CAST(hash({', '.join(parts)}) AS HUGEINT) - 9223372036854775808 AS BIGINT)"


class Reference:
    """One batch through the three layers; Delta tables under ``out/<layer>/<table>``."""

    def __init__(self, landing: Path, day: date, out: Path, threads: int | None = None) -> None:
        import duckdb

        self.landing, self.day, self.out = landing, day, out
        self.con = duckdb.connect()
        if threads:
            self._x(f"SET threads = {threads}")
        self.scratch = Path(tempfile.mkdtemp(prefix="duckdb-ref-"))
        self.counts: dict[str, int] = {}

    def write(self, layer: str, name: str, sql: str, partition_by: tuple[str, ...] = ()) -> None:
        from deltalake import write_deltalake

        rel = self.con.sql(sql)
        path = self.out / layer / name
        write_deltalake(str(path), rel.arrow(), mode="overwrite", partition_by=list(partition_by) or None)

    def _x(self, sql: str, params: list[Any] | None = None) -> list[Any]:
        """Run a statement to completion (DuckDB 2 keeps an unfetched result open on the connection)."""
        return self.con.execute(sql, params or []).fetchall()

    def _q(self, sql: str) -> Any:
        return self._x(sql)[0]

    def bronze(self) -> None:
        ingested_at = datetime.now(UTC).replace(tzinfo=None).isoformat(sep=" ")
        for name, source in SOURCES.items():
            columns = ", ".join(f"CAST(NULL AS VARCHAR) AS {c}" for c in source.bronze_columns)
            meta = (
                "CAST(NULL AS VARCHAR) AS _source_file, CAST(NULL AS DATE) AS _batch_date, "
                "CAST(NULL AS TIMESTAMP) AS _ingested_at, CAST(NULL AS BIGINT) AS _line_number"
            )
            empty = f"SELECT {columns}, {meta} WHERE false"
            path = self._find(source.system, source.file_name)
            info = inspect_file(str(path)) if path else None
            if info is None or info.header is None:  # not delivered, or empty: an empty batch
                self._x(f"CREATE OR REPLACE TEMP TABLE bronze_{name} AS {empty}")
                if info is not None:
                    self.write("bronze", name, f"SELECT * FROM bronze_{name}", ("_batch_date",))
                continue
            file_columns = header_positions(source, info)
            text_path = str(path)
            if not info.valid_utf8:  # like make_valid_utf8: undecodable bytes -> U+FFFD
                fixed = self.scratch / f"{name}.csv"
                fixed.write_text(Path(text_path).read_bytes().decode("utf-8", errors="replace"), encoding="utf-8")
                text_path = str(fixed)
            n = len(file_columns)
            self._x(
                f"""CREATE OR REPLACE TEMP TABLE parsed AS
                WITH lines AS (
                    SELECT CAST(n AS BIGINT) AS _line_number, regexp_replace(line, '\\r$', '') AS _raw_line FROM (
                        SELECT unnest(l) AS line, unnest(range(1, len(l) + 1)) AS n
                        FROM (SELECT string_split(content, chr(10)) AS l FROM read_text(?))
                    )
                ), split AS (
                    SELECT *, instr(_raw_line, '"') > 0 AS _has_quote,
                        CASE WHEN instr(_raw_line, '"') > 0 THEN regexp_extract_all(_raw_line, '{_FIELD_REGEX}', 1)
                             ELSE string_split(_raw_line, ',') END AS _fields
                    FROM lines WHERE _line_number > 1 AND _raw_line <> ''
                )
                SELECT _line_number, _raw_line, _fields,
                    CASE WHEN instr(_raw_line, '\ufffd') > 0 THEN 'invalid UTF-8 byte sequence'
                         WHEN (length(_raw_line) - length(replace(_raw_line, '"', ''))) % 2 = 1
                             THEN 'unbalanced quotes (broken quoting or a record spanning lines)'
                         WHEN _has_quote AND array_to_string(_fields, ',') <> _raw_line
                             THEN 'malformed quoted field (text after a closing quote)'
                         WHEN len(_fields) <> {n} THEN 'expected {n} fields, found ' || CAST(len(_fields) AS VARCHAR)
                    END AS _reason
                FROM split""",
                [text_path],
            )
            meta_sql = (
                f"'{info.path}' AS _source_file, DATE '{self.day.isoformat()}' AS _batch_date, "
                f"TIMESTAMP '{ingested_at}' AS _ingested_at, _line_number"
            )
            fields = {c: self._field(i) for i, c in enumerate(file_columns)}
            select = ", ".join(f"{fields[c]} AS {c}" for c in source.bronze_columns)
            self._x(
                f"CREATE OR REPLACE TEMP TABLE bronze_{name} AS "
                f"SELECT {select}, {meta_sql} FROM parsed WHERE _reason IS NULL"
            )
            self.write("bronze", name, f"SELECT * FROM bronze_{name}", ("_batch_date",))
            self.write(
                "bronze",
                f"{name}_quarantine",
                f"SELECT {meta_sql}, _raw_line, _reason FROM parsed WHERE _reason IS NOT NULL",
                ("_batch_date",),
            )
            self.counts[f"bronze.{name}_quarantine"] = self._q("SELECT count_if(_reason IS NOT NULL) FROM parsed")[0]
        self._x("DROP TABLE IF EXISTS parsed")

    def _find(self, system: str, file_name: str) -> Path | None:
        folder = self.landing / self.day.isoformat() / system
        if not folder.is_dir():
            return None
        return next((p for p in sorted(folder.iterdir()) if p.name.lower() == file_name.lower()), None)

    @staticmethod
    def _field(index: int) -> str:
        raw = f"_fields[{index + 1}]"
        value = (
            f"CASE WHEN starts_with({raw}, '\"') AND ends_with({raw}, '\"') AND length({raw}) >= 2 "
            f"THEN replace(regexp_replace(substr({raw}, 2), '\"$', ''), '\"\"', '\"') ELSE {raw} END"
        )
        return f"nullif({value}, '')"

    def silver(self) -> None:
        clean = _clean_sql(self.day)
        for name, source in SOURCES.items():
            checks = QUARANTINE[name]
            oks = ", ".join(f"coalesce({cond}, false) AS _ok_{label}" for label, cond in checks)
            self._x(
                f"""CREATE OR REPLACE TEMP TABLE checked AS
                SELECT *, {oks} FROM (
                    SELECT {clean[name]}, _batch_date, _line_number,
                        {", ".join(f"{c} AS _raw_{c}" for c in source.bronze_columns)}
                    FROM bronze_{name})"""
            )
            reasons = ", ".join(f"CASE WHEN NOT _ok_{label} THEN '{label}' END" for label, _ in checks)
            bad = " OR ".join(f"NOT _ok_{label}" for label, _ in checks)
            cleaned_cols = [c for c in self._columns("checked") if not c.startswith(("_raw_", "_ok_"))]
            self.write(
                "silver",
                f"{name}_quarantine",
                f"""SELECT {", ".join(f"_raw_{c} AS {c}" for c in source.bronze_columns)}, _batch_date, _line_number,
                    concat_ws('; ', {reasons}) AS _reasons
                FROM checked WHERE {bad}""",
                ("_batch_date",),
            )
            keys, order = ", ".join(KEYS[name]), ", ".join(RECENCY[name])
            latest = f"""SELECT {", ".join(cleaned_cols)} FROM checked WHERE NOT ({bad})
                QUALIFY row_number() OVER (PARTITION BY {keys} ORDER BY {order}) = 1"""
            if name == "crm_prd_info":  # S9: a version ends the day before the next one starts
                latest = f"""SELECT *, CAST(lead(prd_start_dt) OVER (PARTITION BY prd_key ORDER BY prd_start_dt)
                    - INTERVAL 1 DAY AS DATE) AS prd_end_dt FROM ({latest})"""
            self._x(f"CREATE OR REPLACE TEMP TABLE silver_{name} AS {latest}")
            if name == "crm_prd_info":  # the output expectation, always enforced
                (bad_versions,) = self._q(
                    "SELECT count_if(NOT coalesce(prd_end_dt IS NULL OR prd_end_dt >= prd_start_dt, false)) "
                    "FROM silver_crm_prd_info"
                )
                if bad_versions:
                    raise RuntimeError(f"silver crm_prd_info: {bad_versions} versions end before they start")
            self.write("silver", name, f"SELECT * FROM silver_{name}")
            self.counts[f"silver.{name}_quarantine"] = self._q(f"SELECT count_if({bad}) FROM checked")[0]
            self.counts[f"silver.{name}"] = self._q(f"SELECT count(*) FROM silver_{name}")[0]
        self._x("DROP TABLE IF EXISTS checked")

    def _columns(self, table: str) -> list[str]:
        return [r[0] for r in self._x(f"DESCRIBE {table}")]

    def gold(self) -> None:
        c = self
        c._x(
            f"""CREATE OR REPLACE TEMP TABLE dim_customers AS
            SELECT {_sk("'customer'", "cu.cst_id")} AS customer_key, cu.cst_id AS customer_id,
                cu.cst_key AS customer_number, cu.cst_firstname AS first_name, cu.cst_lastname AS last_name,
                coalesce(lo.cntry, 'n/a') AS country, cu.cst_marital_status AS marital_status,
                CASE WHEN cu.cst_gndr <> 'n/a' THEN cu.cst_gndr ELSE coalesce(az.gen, 'n/a') END AS gender,
                az.bdate AS birthdate, cu.cst_create_date AS create_date
            FROM silver_crm_cust_info cu
            LEFT JOIN silver_erp_cust_az12 az ON cu.cst_key = az.cid
            LEFT JOIN silver_erp_loc_a101 lo ON cu.cst_key = lo.cid"""
        )
        c._x(
            f"""CREATE OR REPLACE TEMP TABLE dim_products AS
            SELECT {_sk("'product'", "p.prd_key", "p.prd_start_dt")} AS product_key, p.prd_id AS product_id,
                p.prd_key AS product_number, p.prd_nm AS product_name, p.cat_id AS category_id,
                k.cat AS category, k.subcat AS subcategory, k.maintenance, p.prd_cost AS cost,
                p.prd_line AS product_line, p.prd_start_dt AS valid_from, p.prd_end_dt AS valid_to,
                p.prd_end_dt IS NULL AS is_current
            FROM silver_crm_prd_info p LEFT JOIN silver_erp_px_cat_g1v2 k ON p.cat_id = k.id"""
        )
        c._x(
            """CREATE OR REPLACE TEMP TABLE fact_sales AS
            WITH first_version AS (
                SELECT product_number, product_key FROM dim_products
                QUALIFY row_number() OVER (PARTITION BY product_number ORDER BY valid_from) = 1
            )
            SELECT s.sls_ord_num AS order_number, s.sls_prd_key AS product_number,
                coalesce(v.product_key, f.product_key) AS product_key, s.sls_cust_id AS customer_id,
                cu.customer_key, s.sls_order_dt AS order_date, s.sls_ship_dt AS shipping_date,
                s.sls_due_dt AS due_date, s.sls_sales AS sales_amount, s.sls_quantity AS quantity,
                s.sls_price AS price, v.product_key IS NULL AND f.product_key IS NOT NULL AS product_version_fallback
            FROM silver_crm_sales_details s
            LEFT JOIN dim_products v ON s.sls_prd_key = v.product_number AND s.sls_order_dt >= v.valid_from
                AND (v.valid_to IS NULL OR s.sls_order_dt <= v.valid_to)
            LEFT JOIN first_version f ON s.sls_prd_key = f.product_number
            LEFT JOIN dim_customers cu ON s.sls_cust_id = cu.customer_id"""
        )
        for table, keys in (
            ("dim_customers", "customer_key"),
            ("dim_products", "product_key"),
            ("fact_sales", "order_number, product_number"),
        ):
            (dups,) = self._q(f"SELECT count(*) - count(DISTINCT ({keys})) FROM {table}")
            if dups:  # the fail expectation of the gold job
                raise RuntimeError(f"gold {table}: ({keys}) not unique ({dups} duplicates)")
            self.write("gold", table, f"SELECT * FROM {table}")
            self.counts[f"gold.{table}"] = self._q(f"SELECT count(*) FROM {table}")[0]
        self.write(
            "gold",
            "sales_monthly_by_category_country",
            """SELECT CAST(date_trunc('month', f.order_date) AS DATE) AS order_month,
                coalesce(p.category, 'n/a') AS category, coalesce(c.country, 'n/a') AS country,
                count(DISTINCT f.order_number) AS orders, CAST(sum(f.quantity) AS BIGINT) AS quantity,
                CAST(sum(f.sales_amount) AS BIGINT) AS sales_amount
            FROM fact_sales f LEFT JOIN dim_products p ON f.product_key = p.product_key
            LEFT JOIN dim_customers c ON f.customer_key = c.customer_key
            WHERE f.order_date IS NOT NULL GROUP BY ALL""",
        )
        self.write(
            "gold",
            "product_cost_history",
            "SELECT product_number, product_name, category, subcategory, cost, valid_from, valid_to, is_current "
            "FROM dim_products",
        )

    def run(self) -> dict[str, Any]:
        """All three layers; seconds per layer and the row counts."""
        seconds = {}
        try:
            for layer in LAYERS:
                t0 = time.perf_counter()
                getattr(self, layer)()
                seconds[f"{layer}_s"] = time.perf_counter() - t0
        finally:
            self.con.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
        return {**seconds, "total_s": sum(seconds.values()), "rows": dict(self.counts)}


def run_reference(landing: Path, day: date, out: Path, threads: int | None = None) -> dict[str, Any]:
    return Reference(landing, day, out, threads).run()


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.duckdb_reference", description=__doc__.splitlines()[0])
    p.add_argument("--landing", required=True, type=Path)
    p.add_argument("--day", required=True, type=date.fromisoformat)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args()
    print(json.dumps(run_reference(args.landing, args.day, args.out), indent=2))


if __name__ == "__main__":
    main()
