#!/bin/sh
# Starts `mlflow server` with the basic-auth app. The credentials arrive as environment variables
# (from the compose .env file or Kubernetes secrets) and never as command-line arguments, which
# `ps` and `docker inspect` would show:
#   MLFLOW_BACKEND_STORE_URI        postgresql://USER:PASSWORD@HOST:5432/mlflow (read by mlflow)
#   MLFLOW_AUTH_DATABASE_URI        the user store of the auth app (default: the backend store)
#   MLFLOW_AUTH_ADMIN_USERNAME/PASSWORD, MLFLOW_FLASK_SERVER_SECRET_KEY (read by mlflow)
# The auth config file is written here, readable by this user only, and named by
# MLFLOW_AUTH_CONFIG_PATH; extra arguments go to `mlflow server`.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?MLFLOW_BACKEND_STORE_URI is not set}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?MLFLOW_AUTH_ADMIN_PASSWORD is not set (the admin user needs one)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?MLFLOW_FLASK_SERVER_SECRET_KEY is not set}"
umask 077
config_dir="${TMPDIR:-/tmp}/mlflow-auth"
mkdir -p "$config_dir"
MLFLOW_AUTH_CONFIG_PATH="$config_dir/basic_auth.ini"
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<INI
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
export MLFLOW_AUTH_CONFIG_PATH
exec mlflow server --app-name basic-auth --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:?MLFLOW_ARTIFACTS_DESTINATION is not set}" \
    --serve-artifacts "$@"
