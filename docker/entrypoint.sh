#!/bin/sh
# Entry point of the development image (docker-compose.yaml): fills in the secrets the services
# share, then runs the service's command.
#
# Development secrets are GENERATED, never committed: on first start, random values are written to
# the `dev-secrets` volume (/run/lakehouse-secrets), shared by every container of the stack and
# removed with it by `docker compose down -v`. A value set in the environment (e.g. from .env)
# wins over the generated one:
#   AIRFLOW__CORE__FERNET_KEY        one key for all Airflow components (what one encrypts, another decrypts)
#   AIRFLOW__API_AUTH__JWT_SECRET    signs the execution-API and REST-API tokens
#   LOCAL_DATABRICKS_TOKEN           bearer token of the local Jobs API stand-in
#   AIRFLOW_CONN_DATABRICKS_DEFAULT  defaults to the local Jobs API with that token
set -eu
dir=${LAKEHOUSE_SECRETS_DIR:-/run/lakehouse-secrets}

# Writes a new random value unless one exists; safe when containers start at the same time
# (the value is linked into place atomically: the first container wins, the others read it).
secret() {
  name=$1
  if [ ! -s "$dir/$name" ]; then
    mkdir -p "$dir"
    tmp=$(mktemp "$dir/.new.XXXXXX")
    python -c "$2" >"$tmp"
    ln "$tmp" "$dir/$name" 2>/dev/null || true
    rm -f "$tmp"
  fi
  cat "$dir/$name"
}

if [ -z "${AIRFLOW__CORE__FERNET_KEY:-}" ]; then
  AIRFLOW__CORE__FERNET_KEY=$(secret fernet_key \
    'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode(), end="")')
fi
if [ -z "${AIRFLOW__API_AUTH__JWT_SECRET:-}" ]; then
  AIRFLOW__API_AUTH__JWT_SECRET=$(secret jwt_secret 'import secrets; print(secrets.token_urlsafe(32), end="")')
fi
if [ -z "${LOCAL_DATABRICKS_TOKEN:-}" ]; then
  LOCAL_DATABRICKS_TOKEN=$(secret jobs_api_token 'import secrets; print("dev-" + secrets.token_hex(16), end="")')
fi
if [ -z "${AIRFLOW_CONN_DATABRICKS_DEFAULT:-}" ]; then
  AIRFLOW_CONN_DATABRICKS_DEFAULT="databricks://:${LOCAL_DATABRICKS_TOKEN}@local-databricks:8765/http"
fi
export AIRFLOW__CORE__FERNET_KEY AIRFLOW__API_AUTH__JWT_SECRET LOCAL_DATABRICKS_TOKEN AIRFLOW_CONN_DATABRICKS_DEFAULT
exec "$@"
