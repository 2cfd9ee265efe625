"""Airflow-side code of the lakehouse: deployment config, Databricks payloads, macros, alerting.

Installed as a package (``lakehouse_airflow``) so that the scheduler, workers, the dag-processor
and the triggerer all import it the same way; nothing here imports pyspark.
"""
