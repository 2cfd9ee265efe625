"""What an alert says: rendered from facts, for email (text + HTML) and Slack."""

from __future__ import annotations

from lakehouse_airflow.alerts.messages import (
    AlertFacts,
    Kind,
    html_body,
    likely_cause,
    redact,
    slack_message,
    subject,
    text_body,
)

DQ_ERROR = (
    "Traceback (most recent call last):\n  ...\nspark_jobs.dq.DataQualityError: [LAKEHOUSE_DQ_FAILED] data quality check failed for "
    "crm_sales_details: expectation 'sales_equals_quantity_times_price' [quarantine] failed on 2 of 20 rows "
    "(limit 5.00%): sales = quantity x price after repair; sample keys: SO90/BK-1 (line 20)\n"
    "crm_sales_details: 20 rows in\n  [quarantine] sales_equals_quantity_times_price: 2 violations (10.00%)  BREACHED"
)


def failed(**kw) -> AlertFacts:
    base = dict(
        kind=Kind.FAILED,
        env="prod",
        dag_id="ecommerce_lakehouse",
        batch_date="2024-01-15",
        task_id="silver",
        try_number=3,
        max_tries=3,
        duration_seconds=312.4,
        run_page_url="https://dbc.example/run/42",
        log_url="https://airflow.example/log?x=1",
        error="RuntimeError: cluster lost",
    )
    return AlertFacts(**{**base, **kw})


def test_subject_sorts_by_env_state_task_and_date():
    assert subject(failed()) == "[lakehouse][prod] FAILED silver 2024-01-15"
    assert subject(failed(kind=Kind.RECOVERED)) == "[lakehouse][prod] RECOVERED silver 2024-01-15"


def test_text_body_has_what_on_call_needs():
    body = text_body(failed())
    for expected in (
        "Task: silver",
        "Try: 3/3",
        "Duration: 312 s",
        "Databricks run: https://dbc.example/run/42",
        "Airflow log: https://airflow.example/log?x=1",
        "Error:\nRuntimeError: cluster lost",
    ):
        assert expected in body


def test_expectation_failure_carries_the_dq_summary_and_cause():
    facts = failed(error=DQ_ERROR)
    assert likely_cause(facts) == "a data-quality expectation failed: see the summary below"
    body = text_body(facts)
    assert "Data quality:\ndata quality check failed for crm_sales_details" in body
    assert "[quarantine] sales_equals_quantity_times_price: 2 violations (10.00%)  BREACHED" in body
    assert "SO90/BK-1 (line 20)" in html_body(facts)


def test_long_errors_are_cut_and_secrets_redacted():
    error = "\n".join(f"line {i}" for i in range(40)) + "\nAuthorization: Bearer dapiABC123secret"
    body = text_body(failed(error=error))
    assert "line 11" in body and "line 12" not in body and "(29 more lines)" in body
    assert redact("token=abc.def password: hunter2 Bearer xyz dapi0123") == "token=*** password: *** Bearer *** dapi***"
    assert (
        redact('postgresql://etl:s3cr3t@db/x {"password": "pw"} https://hooks.slack.com/services/T0/B0/XyZ')
        == 'postgresql://etl:***@db/x {"password": "***"} https://hooks.slack.com/services/***'
    )
    assert redact("http://127.0.0.1:8765/runs/3") == "http://127.0.0.1:8765/runs/3"
    detail = "could not connect to smtp://alerts:hunter2@mail:25"
    assert "hunter2" not in text_body(failed(detail=detail, error=None)) + html_body(failed(detail=detail))


def test_html_escapes_and_links():
    body = html_body(failed(error="<script>alert(1)</script>"))
    assert "&lt;script&gt;" in body and "<script>" not in body
    assert "<a href='https://dbc.example/run/42'>" in body


def test_slack_message_is_block_kit_with_a_text_fallback():
    message = slack_message(failed(error=DQ_ERROR))
    assert message["text"] == ":red_circle: [lakehouse][prod] FAILED silver 2024-01-15"
    blocks = message["blocks"]
    assert blocks[0]["type"] == "header"
    fields = [f["text"] for b in blocks if b["type"] == "section" and "fields" in b for f in b["fields"]]
    assert "*Databricks run*\n<https://dbc.example/run/42|open>" in fields
    assert "BREACHED" in blocks[-1]["text"]["text"]


def test_dag_failure_and_deadline_messages():
    dag_failed = AlertFacts(
        kind=Kind.DAG_FAILED,
        env="dev",
        dag_id="ecommerce_lakehouse",
        batch_date="2024-01-15",
        failed_tasks=("silver",),
        skipped_tasks=("gold",),
    )
    assert subject(dag_failed) == "[lakehouse][dev] DAG FAILED ecommerce_lakehouse 2024-01-15"
    assert "Failed tasks: silver" in text_body(dag_failed) and "Not run because of it: gold" in text_body(dag_failed)
    late = AlertFacts(
        kind=Kind.DEADLINE,
        env="prod",
        dag_id="ecommerce_lakehouse",
        batch_date="2024-01-15",
        detail="gold not done 6h after the batch (deadline 2024-01-16 09:00 UTC)",
    )
    assert likely_cause(late) == "the pipeline is late: a task is slow, queued or stuck"


def test_recovery_message_has_no_likely_cause():
    """Its detail quotes the earlier failure, whose words must not read as the cause of anything now."""
    detail = "ecommerce_lakehouse succeeded for batch 2024-01-16; it was failing since 2024-01-16 03:10 UTC"
    recovered = failed(
        kind=Kind.RECOVERED, task_id=None, batch_date="2024-01-16", error=None, detail=detail + " (timed out)"
    )
    assert likely_cause(recovered) is None
    assert (
        slack_message(recovered)["text"]
        == ":large_green_circle: [lakehouse][prod] RECOVERED ecommerce_lakehouse 2024-01-16"
    )


def test_redaction_hides_quoted_values_whole():
    assert redact("password='x'") == "password='***'"
    assert redact('password="two words"') == 'password="***"'
    assert redact("{'db_password': 'a\\'b', 'user': 'u'}") == "{'db_password': '***', 'user': 'u'}"


def test_redaction_hides_json_tokens_and_keys():
    assert redact('{"token": "x", "run_id": 7}') == '{"token": "***", "run_id": 7}'
    assert redact('{"api_key": "k-1", "client_secret":"s"}') == '{"api_key": "***", "client_secret":"***"}'


def test_redaction_hides_api_keys():
    assert redact("api_key=abc123 next") == "api_key=*** next"
    assert redact("X-Api-Key: k1; other") == "X-Api-Key: ***; other"
    assert redact("GET /x?a=1&access_token=abc&b=2") == "GET /x?a=1&access_token=***&b=2"


def test_redaction_hides_cloud_secrets_named_in_longer_names():
    assert redact("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG+bPxRfiCY") == "AWS_SECRET_ACCESS_KEY=***"
    assert redact("export PGPASSWORD=pw; psql") == "export PGPASSWORD=***; psql"
    assert redact("spark.hadoop.fs.s3a.secret.key=zz") == "spark.hadoop.fs.s3a.secret.key=***"
    assert redact("lakehouse --token abc --password=x y") == "lakehouse --token *** --password=*** y"


def test_redaction_hides_the_whole_bare_value_even_with_punctuation():
    assert redact("password=p@ss") == "password=***"
    assert redact("password=p@ss!w0rd#1 user=etl") == "password=*** user=etl"
    assert redact("smtp://alerts:p@ss@mail:25/x") == "smtp://alerts:***@mail:25/x"
    assert redact("Authorization: Bearer eyJhbGc.a-b/c+d=") == "Authorization: Bearer ***"
    assert redact("token: Bearer abc") == "token: Bearer ***"


def test_redaction_keeps_ordinary_text():
    text = "ConservationError: 3 rows lost between bronze and silver\npassword:\nline two"
    assert redact(text) == text
    assert redact("http://127.0.0.1:8765/api/2.1/jobs/runs/get?run_id=3") == (
        "http://127.0.0.1:8765/api/2.1/jobs/runs/get?run_id=3"
    )


def test_every_named_job_error_has_a_likely_cause():
    """The codes of ``spark_jobs.errors`` are the contract: a new named error needs a cause here."""
    from lakehouse_airflow.alerts.messages import JOB_CAUSES

    from spark_jobs.errors import named_errors

    codes = {cls.code for cls in named_errors()}
    assert codes == set(JOB_CAUSES)
    for cls in named_errors():
        error = f"{cls.__name__}: {cls('wording that may change')}"
        assert likely_cause(failed(error=error)) == JOB_CAUSES[cls.code], cls


def test_likely_cause_keys_off_the_code_not_the_wording():
    from spark_jobs.errors import DataQualityError, HeaderMismatchError

    reworded = f"DataQualityError: {DataQualityError('expectations breached on crm_sales_details')}"
    assert likely_cause(failed(error=reworded)) == "a data-quality expectation failed: see the summary below"
    assert "Data quality:\nexpectations breached on crm_sales_details" in text_body(failed(error=reworded))
    # English that once matched, without the code, names no job cause
    assert likely_cause(failed(error="RuntimeError: data quality check failed (a user's own job)")) is None
    mismatch = f"HeaderMismatchError: {HeaderMismatchError('cust_info.csv: columns changed')}"
    assert likely_cause(failed(error=mismatch)) == "an export file changed its columns (header mismatch)"
