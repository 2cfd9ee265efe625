"""A local stand-in for the Databricks Jobs API (submitted runs), over real HTTP on loopback.

It runs each submitted task for real (our package's wheel entry point or a Python file) in a
subprocess on the embedded engine, keeps run state in SQLite, serves logs at the run page URL,
and can inject faults (HTTP 429/500, dropped connections, slow answers, failing or hanging tasks).
"""
