# One development image for every service of docker-compose.yaml: Airflow (api-server, scheduler,
# dag-processor, triggerer) and the local Databricks Jobs API running the Spark jobs on embedded Sail.
# Versions come from uv.lock, as on a laptop. Production Airflow images install only
# `ecommerce-lakehouse[airflow]` (no pyspark); Databricks installs the wheel (`uv build`).
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    AIRFLOW_HOME=/opt/airflow

RUN pip install --no-cache-dir "uv>=0.5"
WORKDIR /opt/lakehouse

# Dependencies first (cached while only our code and docs change), then the project itself.
COPY pyproject.toml uv.lock ./
RUN uv sync --frozen --all-extras --no-install-project
COPY README.md ./
COPY spark_jobs ./spark_jobs
COPY local_databricks ./local_databricks
COPY plugins ./plugins
COPY dags ./dags
COPY scripts ./scripts
RUN uv sync --frozen --all-extras

# Generates the development secrets on first start (none is committed), then runs the command.
COPY docker/entrypoint.sh /usr/local/bin/lakehouse-entrypoint
ENTRYPOINT ["sh", "/usr/local/bin/lakehouse-entrypoint"]
EXPOSE 8080 8765
