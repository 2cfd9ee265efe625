"""Alerting: what an on-call person needs to act on a failure, rendered for email and Slack."""
