"""Contracts of the CRM/ERP exports: which file feeds which table, with which header."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Source:
    """One exported CSV file and the table it feeds (``bronze.<table>``, ``silver.<table>``)."""

    table: str
    system: str  # folder under the batch: source_crm / source_erp
    file_name: str  # matched case-insensitively
    columns: tuple[str, ...]  # header, in export order; bronze column names are these, lower-cased

    @property
    def bronze_columns(self) -> tuple[str, ...]:
        return tuple(c.lower() for c in self.columns)


SOURCES: dict[str, Source] = {
    s.table: s
    for s in (
        Source(
            "crm_cust_info",
            "source_crm",
            "cust_info.csv",
            (
                "cst_id",
                "cst_key",
                "cst_firstname",
                "cst_lastname",
                "cst_marital_status",
                "cst_gndr",
                "cst_create_date",
            ),
        ),
        Source(
            "crm_prd_info",
            "source_crm",
            "prd_info.csv",
            ("prd_id", "prd_key", "prd_nm", "prd_cost", "prd_line", "prd_start_dt", "prd_end_dt"),
        ),
        Source(
            "crm_sales_details",
            "source_crm",
            "sales_details.csv",
            (
                "sls_ord_num",
                "sls_prd_key",
                "sls_cust_id",
                "sls_order_dt",
                "sls_ship_dt",
                "sls_due_dt",
                "sls_sales",
                "sls_quantity",
                "sls_price",
            ),
        ),
        Source("erp_cust_az12", "source_erp", "CUST_AZ12.csv", ("CID", "BDATE", "GEN")),
        Source("erp_loc_a101", "source_erp", "LOC_A101.csv", ("CID", "CNTRY")),
        Source("erp_px_cat_g1v2", "source_erp", "PX_CAT_G1V2.csv", ("ID", "CAT", "SUBCAT", "MAINTENANCE")),
    )
}
