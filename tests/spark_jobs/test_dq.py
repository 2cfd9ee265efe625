from __future__ import annotations

import pytest

from spark_jobs import dq
from spark_jobs.dq import Action, Expectation

EXPECTATIONS = (
    Expectation("id_present", "id IS NOT NULL", Action.QUARANTINE),
    Expectation("amount_positive", "amount > 0", Action.WARN),
    Expectation("amount_small", "amount < 1000", Action.QUARANTINE, max_fraction=0.5),
)


def _df(spark):
    return spark.createDataFrame([(1, 10), (None, 5), (3, -1), (4, None), (5, 5000)], "id int, amount int")


def test_null_condition_counts_as_a_violation_and_reasons_name_quarantine_expectations(spark):
    checked = _df(spark).transform(dq.check(EXPECTATIONS))
    counts = dq.count_violations(checked, EXPECTATIONS)
    rows_in, results = counts.rows_in, counts.results
    assert rows_in == 5
    assert {r.expectation.name: r.violations for r in results} == {
        "id_present": 1,
        "amount_positive": 2,
        "amount_small": 2,
    }
    reasons = {r["id"]: r[dq.QUARANTINE_REASONS] for r in checked.collect()}
    assert reasons == {1: [], None: ["id_present"], 3: [], 4: ["amount_small"], 5: ["amount_small"]}
    assert checked.filter(dq.is_quarantined()).count() == 3
    assert checked.transform(dq.drop_checks(EXPECTATIONS)).columns == ["id", "amount"]


def test_thresholds_and_fail_actions_raise_with_a_summary(spark):
    strict = (*EXPECTATIONS, Expectation("id_small", "id < 4", Action.FAIL, description="ids below 4"))
    checked = _df(spark).transform(dq.check(strict))
    counts = dq.count_violations(checked, strict)
    rows_in, results = counts.rows_in, counts.results
    assert [r.breached for r in results] == [False, False, False, True]
    with pytest.raises(dq.DataQualityError) as excinfo:
        dq.raise_if_breached(
            "silver.t", rows_in=rows_in, results=results, samples={"id_small": ["4 (line 5)", "5 (line 6)"]}
        )
    message = str(excinfo.value)
    assert (
        "expectation 'id_small' [fail] failed on 3 of 5 rows: ids below 4; sample keys: 4 (line 5), 5 (line 6)"
        in message
    )
    assert "[warn      ] amount_positive: 2 violations (40.00%)" in message

    loose = (Expectation("amount_small", "amount < 1000", Action.QUARANTINE, max_fraction=0.3),)
    results = dq.count_violations(_df(spark).transform(dq.check(loose)), loose).results
    assert results[0].breached  # 2 of 5 = 40% > 30%
