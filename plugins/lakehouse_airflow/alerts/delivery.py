"""Delivering an alert by email and Slack through the providers' hooks, never failing the caller.

Connections come from Airflow (e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``, ``AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT``),
recipients from ``LAKEHOUSE_ALERT_EMAILS`` (``lakehouse_airflow.config.AlertConfig``). With no
connection configured (the local default) the alert is written to the log instead. A delivery that
fails (SMTP down, webhook 500) is logged with the reason: it must not hide or change the outcome of
the task that raised the alert.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from email.message import EmailMessage

from lakehouse_airflow.alerts.messages import AlertFacts, html_body, redact, slack_message, subject, text_body
from lakehouse_airflow.config import AlertConfig, alert_config, target_env

log = logging.getLogger(__name__)


def config_or_defaults() -> tuple[AlertConfig, Exception | None]:
    """This process's alert settings; if they cannot be read, the defaults (the default
    connections, no recipients) and the error, which the alert then mentions: a wrong setting
    must not cost the alert it would have configured."""
    try:
        return alert_config(), None
    except Exception as exc:
        log.exception("invalid alert settings: alerting with the defaults")
        return AlertConfig(env=target_env()), exc


def with_config_error(facts: AlertFacts, error: Exception | None) -> AlertFacts:
    """``facts`` with a note that the alert settings could not be read (when they could not)."""
    if error is None:
        return facts
    note = f"the alert settings are invalid, sent with the defaults ({type(error).__name__}: {error})"
    return replace(facts, detail=f"{facts.detail}; {note}" if facts.detail else note)


def _connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook

    try:
        BaseHook.get_connection(conn_id)
    except Exception:
        return False
    return True


def email_message(facts: AlertFacts, config: AlertConfig) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject(facts)
    message["From"] = config.from_email
    message["To"] = ", ".join(config.emails)
    message.set_content(text_body(facts))
    message.add_alternative(html_body(facts), subtype="html")
    return message


def send_email(facts: AlertFacts, config: AlertConfig) -> bool:
    """Plain text + HTML alternative, sent over the SMTP connection's client."""
    if not config.emails or not _connection_exists(config.smtp_conn_id):
        log.warning("ALERT (no email recipients or SMTP connection %r):\n%s", config.smtp_conn_id, text_body(facts))
        return False
    try:
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        with SmtpHook(smtp_conn_id=config.smtp_conn_id) as hook:
            # The hook's send_email_smtp sends HTML only; the hook's own client sends our
            # multipart/alternative message (text for terminals and pagers, HTML for mail clients).
            client = hook._smtp_client
            assert client is not None
            client.send_message(email_message(facts, config))
        return True
    except Exception as exc:
        log.error(
            "alert email %r could not be delivered via %r: %s", subject(facts), config.smtp_conn_id, redact(str(exc))
        )
        return False


def send_slack(facts: AlertFacts, config: AlertConfig) -> bool:
    if not _connection_exists(config.slack_conn_id):
        log.warning("ALERT (no Slack connection %r):\n%s", config.slack_conn_id, text_body(facts))
        return False
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        message = slack_message(facts)
        SlackWebhookHook(slack_webhook_conn_id=config.slack_conn_id).send(
            text=str(message["text"]),
            blocks=message["blocks"],  # type: ignore[arg-type]
        )
        return True
    except Exception as exc:
        log.error(
            "alert Slack message %r could not be delivered via %r: %s",
            subject(facts),
            config.slack_conn_id,
            redact(str(exc)),
        )
        return False


def deliver(facts: AlertFacts, config: AlertConfig | None = None) -> dict[str, bool]:
    """Send ``facts`` on every channel; returns which deliveries succeeded."""
    if config is None:
        config, error = config_or_defaults()
        facts = with_config_error(facts, error)
    sent = {}
    if "email" in config.channels:
        sent["email"] = send_email(facts, config)
    if "slack" in config.channels:
        sent["slack"] = send_slack(facts, config)
    return sent
