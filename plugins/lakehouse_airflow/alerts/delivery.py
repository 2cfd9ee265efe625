"""Delivering an alert by email and Slack through the providers' hooks, never failing the caller.

Connections come from Airflow (e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``, ``AIRFLOW_CONN_SLACK_WEBHOOK_DEFAULT``),
recipients from ``LAKEHOUSE_ALERT_EMAILS``. With no connection configured (the local default) the
alert is written to the log instead. A delivery that fails (SMTP down, webhook 500) is logged with
the reason: it must not hide or change the outcome of the task that raised the alert.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage

from lakehouse_airflow.alerts.messages import AlertFacts, html_body, redact, slack_message, subject, text_body
from lakehouse_airflow.config import flag

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertConfig:
    emails: tuple[str, ...] = ()
    smtp_conn_id: str = "smtp_default"
    slack_conn_id: str = "slack_webhook_default"
    from_email: str = "lakehouse-alerts@localhost"
    notify_on_retry: bool = False
    notify_on_recovery: bool = True
    channels: tuple[str, ...] = field(default=("email", "slack"))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AlertConfig:
        env = os.environ if environ is None else environ
        return cls(
            emails=tuple(e.strip() for e in env.get("LAKEHOUSE_ALERT_EMAILS", "").split(",") if e.strip()),
            smtp_conn_id=env.get("LAKEHOUSE_SMTP_CONN_ID", cls.smtp_conn_id),
            slack_conn_id=env.get("LAKEHOUSE_SLACK_CONN_ID", cls.slack_conn_id),
            from_email=env.get("LAKEHOUSE_ALERT_FROM", cls.from_email),
            notify_on_retry=flag(env, "LAKEHOUSE_ALERT_ON_RETRY", default=False),
            notify_on_recovery=flag(env, "LAKEHOUSE_ALERT_ON_RECOVERY", default=True),
        )


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
    config = config or AlertConfig.from_env()
    sent = {}
    if "email" in config.channels:
        sent["email"] = send_email(facts, config)
    if "slack" in config.channels:
        sent["slack"] = send_slack(facts, config)
    return sent
