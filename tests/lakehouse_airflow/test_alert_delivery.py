"""Alerts delivered to real receivers; delivery failures are logged, never raised."""

from __future__ import annotations

import logging

from lakehouse_airflow.alerts.delivery import AlertConfig, deliver

from tests.lakehouse_airflow.test_alert_messages import failed

FACTS = failed(run_page_url="http://dbc.local/runs/7")


def test_one_email_with_text_and_html_and_one_slack_post(alert_connections):
    smtp, slack = alert_connections
    assert deliver(FACTS) == {"email": True, "slack": True}
    [message] = smtp.messages
    assert message["Subject"] == "[lakehouse][prod] FAILED silver 2024-01-15"
    assert message["To"] == "oncall@example.com"
    parts = {p.get_content_type(): p.get_payload(decode=True).decode() for p in message.walk() if not p.is_multipart()}
    assert "Databricks run: http://dbc.local/runs/7" in parts["text/plain"]
    assert "<a href='http://dbc.local/runs/7'>" in parts["text/html"]
    [post] = slack.posts
    assert post["text"] == ":red_circle: [lakehouse][prod] FAILED silver 2024-01-15"
    assert post["blocks"][0]["type"] == "header"


def test_smtp_down_and_webhook_500_are_logged_not_raised(alert_connections, caplog, monkeypatch):
    smtp, slack = alert_connections
    slack.status = 500
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_DEFAULT",
        '{"conn_type": "smtp", "host": "127.0.0.1", "port": 1, '
        '"extra": {"disable_ssl": true, "disable_tls": true, "from_email": "a@b.c"}}',
    )
    with caplog.at_level(logging.ERROR):
        assert deliver(FACTS) == {"email": False, "slack": False}
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("alert email" in e and "could not be delivered via 'smtp_default'" in e for e in errors)
    assert any("alert Slack message" in e and "could not be delivered" in e for e in errors)
    assert not any("secret" in e for e in errors)  # the webhook token is not logged
    assert smtp.messages == []


def test_without_connections_the_alert_goes_to_the_log(caplog, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_SMTP_DEFAULT", raising=False)
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT", raising=False)
    with caplog.at_level(logging.WARNING):
        assert deliver(FACTS, AlertConfig(emails=("oncall@example.com",))) == {"email": False, "slack": False}
    assert any("[lakehouse][prod] FAILED silver 2024-01-15" in r.getMessage() for r in caplog.records)
