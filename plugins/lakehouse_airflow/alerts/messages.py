"""Pure rendering of alerts: facts in, email subject/text/HTML and a Slack Block Kit message out.

An alert says what broke (DAG, task, batch date), how often it was tried, where to click (the
Databricks run page, the Airflow log), the first lines of the Databricks error, the data-quality
summary when an expectation failed, and a one-line likely cause.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

MAX_ERROR_LINES = 12
# Names whose value is a credential, alone or inside a longer name: ``password``, ``db_password``,
# ``api_key``, ``X-Api-Key``, ``AWS_SECRET_ACCESS_KEY``, ``client_secret``, ``access_token``,
# ``spark.hadoop.fs.s3a.secret.key``.
_SECRET_NAME = (
    r"[\w.\-]*(?:passw(?:or)?d|pwd|secret|token|api[_\-.]?key|access[_\-.]?key|private[_\-.]?key"
    r"|credentials?)[\w.\-]*"
)
_SECRETS: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    # name=value, name: value and --name value, the name bare or quoted (JSON, Python reprs), the
    # value quoted (redacted inside its quotes) or bare (redacted up to the next space, quote,
    # comma, ; or &, so that ``password=p@ss`` loses all of ``p@ss``)
    (
        re.compile(
            rf"(?i)(?P<key>(?P<q>[\"']?)\b{_SECRET_NAME}(?P=q)[ \t]*[=:][ \t]*(?:(?:bearer|basic)[ \t]+)?"
            rf"|--{_SECRET_NAME}[ \t]+)"
            r"(?:(?P<vq>[\"'])(?:\\.|(?!(?P=vq)).)*(?P=vq)|[^\s\"',;&]+)"
        ),
        lambda m: m["key"] + (f"{m['vq']}***{m['vq']}" if m["vq"] else "***"),
    ),
    # bearer/basic authorization values and Databricks personal access tokens
    (re.compile(r"(?i)(bearer\s+|basic\s+|dapi)(?!\*\*\*)[A-Za-z0-9._~+/=\-]+"), r"\1***"),
    # user:password@ in URIs; the password may itself contain ``@`` (the last ``@`` ends it)
    (re.compile(r"(://[^/\s:@]*:)[^\s/]+(@)"), r"\1***\2"),
    (re.compile(r"(?i)(hooks\.slack\.com/services/)[A-Za-z0-9/_\-]+"), r"\1***"),  # Slack webhook URLs
]


class Kind(StrEnum):
    FAILED = "FAILED"  # a task failed after its final try
    RETRY = "RETRY"  # a task will be retried (quiet note, off by default)
    DAG_FAILED = "DAG FAILED"  # summary of a failed DAG run
    DEADLINE = "DEADLINE MISSED"
    RECOVERED = "RECOVERED"


@dataclass(frozen=True)
class AlertFacts:
    kind: Kind
    env: str
    dag_id: str
    batch_date: str
    task_id: str | None = None
    try_number: int | None = None
    max_tries: int | None = None
    duration_seconds: float | None = None
    run_page_url: str | None = None
    log_url: str | None = None
    airflow_run_url: str | None = None  # the DAG run's page (grid) in the Airflow UI
    error: str | None = None  # the Databricks error (get-output) or the exception text
    failed_tasks: tuple[str, ...] = ()
    skipped_tasks: tuple[str, ...] = ()
    running_tasks: tuple[str, ...] = ()
    detail: str | None = None  # e.g. the deadline that was missed
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def subject_target(self) -> str:
        return self.task_id or self.dag_id


def redact(text: str) -> str:
    """Remove things that look like credentials: the value of anything named like a password,
    secret, token or key (``name=value``, ``name: value``, ``--name value``, JSON and Python reprs,
    quoted or bare), bearer/basic credentials, Databricks PATs, passwords in URIs, Slack webhook
    URLs. Errs on the side of hiding: an alert never needs the secret itself."""
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def error_excerpt(error: str | None, max_lines: int = MAX_ERROR_LINES) -> str | None:
    if not error:
        return None
    lines = [ln.rstrip() for ln in redact(error).strip().splitlines() if ln.strip()]
    excerpt = lines[:max_lines]
    if len(lines) > max_lines:
        excerpt.append(f"... ({len(lines) - max_lines} more lines)")
    return "\n".join(excerpt)


# The jobs' named errors start their text with ``[LAKEHOUSE_<CODE>]`` (``spark_jobs.errors``): the
# likely cause is looked up by that code, never by the English of the message.
_CODE = re.compile(r"\[(LAKEHOUSE_[A-Z_]+)\] ?")
DQ_FAILED = "LAKEHOUSE_DQ_FAILED"
JOB_CAUSES: dict[str, str] = {
    DQ_FAILED: "a data-quality expectation failed: see the summary below",
    "LAKEHOUSE_HEADER_MISMATCH": "an export file changed its columns (header mismatch)",
    "LAKEHOUSE_ROWS_NOT_CONSERVED": (
        "silver would lose rows of the batch (nothing was written): a pipeline bug, report it"
    ),
    "LAKEHOUSE_EMPTY_REDELIVERY": "an empty or header-only file was re-delivered for a day that had data "
    "(a broken export?); fix the export, or re-run with --allow-empty-redelivery",
    "LAKEHOUSE_SCHEMA_MISMATCH": "a table's schema differs from what the job writes (a migration is missing)",
    "LAKEHOUSE_TABLE_NOT_FOUND": "an upstream table was never written: run the layers in order",
    "LAKEHOUSE_TABLE_BUSY": "another run is still writing the same tables (a run that outlived its task?)",
    "LAKEHOUSE_INVALID_SETTING": "a job setting or parameter is missing or invalid: see the error",
    "LAKEHOUSE_ENGINE_UNAVAILABLE": "the Spark engine cannot run the job here (Delta or Spark Connect missing)",
}
# Failures outside the jobs, named by Databricks, the provider or Airflow.
_PLATFORM_CAUSES = (
    ("TIMEDOUT", "the Databricks run timed out"),
    ("timed out", "timeout"),
    ("AirflowTaskTimeout", "the Airflow task hit its execution_timeout; the Databricks run was cancelled"),
    ("INTERNAL_ERROR", "cluster or Databricks API error"),
    ("API requests to Databricks failed", "Databricks API unreachable or rejecting requests"),
    ("401", "Databricks credentials rejected (401)"),
    ("403", "Databricks permission denied (403)"),
)


def dq_summary(error: str | None) -> str | None:
    """The data-quality block that a failed expectation puts in the job's error, if any."""
    match = next((m for m in _CODE.finditer(error or "") if m.group(1) == DQ_FAILED), None)
    if error is None or match is None:
        return None
    return redact(error[match.end() :]).strip()


def likely_cause(facts: AlertFacts) -> str | None:
    if facts.kind is Kind.RECOVERED:
        return None
    text = (facts.error or "") + " " + (facts.detail or "")
    for match in _CODE.finditer(text):
        if match.group(1) in JOB_CAUSES:
            return JOB_CAUSES[match.group(1)]
    for needle, cause in _PLATFORM_CAUSES:
        if needle in text:
            return cause
    if facts.kind is Kind.DEADLINE:
        return "the pipeline is late: a task is slow, queued or stuck"
    return None


def subject(facts: AlertFacts) -> str:
    """``[lakehouse][prod] FAILED silver 2024-01-15``: sorts by env, state, task, then date."""
    return f"[lakehouse][{facts.env}] {facts.kind.value} {facts.subject_target} {facts.batch_date}"


def _lines(facts: AlertFacts) -> list[tuple[str, str]]:
    rows = [("DAG", facts.dag_id), ("Batch date", facts.batch_date)]
    if facts.task_id:
        rows.append(("Task", facts.task_id))
    if facts.try_number is not None:
        tries = f"{facts.try_number}/{facts.max_tries}" if facts.max_tries else str(facts.try_number)
        rows.append(("Try", tries))
    if facts.duration_seconds is not None:
        rows.append(("Duration", f"{facts.duration_seconds:.0f} s"))
    if facts.failed_tasks:
        rows.append(("Failed tasks", ", ".join(facts.failed_tasks)))
    if facts.skipped_tasks:
        rows.append(("Not run because of it", ", ".join(facts.skipped_tasks)))
    if facts.running_tasks:
        rows.append(("Still running", ", ".join(facts.running_tasks)))
    if facts.detail:
        rows.append(("Detail", facts.detail))
    cause = likely_cause(facts)
    if cause:
        rows.append(("Likely cause", cause))
    if facts.run_page_url:
        rows.append(("Databricks run", facts.run_page_url))
    if facts.log_url:
        rows.append(("Airflow log", facts.log_url))
    if facts.airflow_run_url:
        rows.append(("Airflow run", facts.airflow_run_url))
    rows.extend(facts.extra.items())
    return [(k, redact(v)) for k, v in rows]


def text_body(facts: AlertFacts) -> str:
    parts = [subject(facts), ""]
    parts += [f"{k}: {v}" for k, v in _lines(facts)]
    dq = dq_summary(facts.error)
    excerpt = error_excerpt(facts.error) if not dq else None
    if excerpt:
        parts += ["", "Error:", excerpt]
    if dq:
        parts += ["", "Data quality:", dq]
    return "\n".join(parts) + "\n"


def html_body(facts: AlertFacts) -> str:
    rows = "".join(f"<tr><th align='left'>{html.escape(k)}</th><td>{_link(v)}</td></tr>" for k, v in _lines(facts))
    out = [f"<h2>{html.escape(subject(facts))}</h2>", f"<table>{rows}</table>"]
    dq = dq_summary(facts.error)
    excerpt = error_excerpt(facts.error) if not dq else None
    if excerpt:
        out.append(f"<h3>Error</h3><pre>{html.escape(excerpt)}</pre>")
    if dq:
        out.append(f"<h3>Data quality</h3><pre>{html.escape(dq)}</pre>")
    return "<html><body>" + "".join(out) + "</body></html>"


def _link(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return f"<a href='{html.escape(value, quote=True)}'>{html.escape(value)}</a>"
    return html.escape(value)


_EMOJI = {
    Kind.FAILED: ":red_circle:",
    Kind.RETRY: ":large_yellow_circle:",
    Kind.DAG_FAILED: ":red_circle:",
    Kind.DEADLINE: ":alarm_clock:",
    Kind.RECOVERED: ":large_green_circle:",
}


def slack_message(facts: AlertFacts) -> dict[str, object]:
    """Block Kit message with a plain ``text`` fallback (notifications, screen readers)."""
    fields = [{"type": "mrkdwn", "text": f"*{k}*\n{_slack_link(v)}"} for k, v in _lines(facts)]
    blocks: list[dict[str, object]] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{subject(facts)}"[:150]}},
    ]
    for i in range(0, len(fields), 10):  # Slack allows 10 fields per section
        blocks.append({"type": "section", "fields": fields[i : i + 10]})
    dq = dq_summary(facts.error)
    excerpt = dq or error_excerpt(facts.error)
    if excerpt:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{excerpt[:2900]}```"}})
    return {"text": f"{_EMOJI[facts.kind]} {subject(facts)}", "blocks": blocks}


def _slack_link(value: str) -> str:
    return f"<{value}|open>" if value.startswith(("http://", "https://")) else value
