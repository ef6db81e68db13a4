# The tracking server: MLflow with its basic-auth app, psycopg2 for the PostgreSQL backend store
# and boto3 for the S3 artifact destination it proxies (--serve-artifacts).
#   docker build -f docker/mlflow.Dockerfile -t REGISTRY/sepcore-mlflow:0.1.0 .
FROM python:3.11.14-slim-bookworm

ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow[auth]==${MLFLOW_VERSION}" "psycopg2-binary>=2.9,<3" \
        "boto3>=1.40" \
    && useradd --create-home --uid 10001 mlflow
COPY --chmod=0755 docker/mlflow-entrypoint.sh /usr/local/bin/mlflow-entrypoint

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
ENTRYPOINT ["mlflow-entrypoint"]
