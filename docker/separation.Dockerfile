# The separation service (FastAPI under uvicorn) for a machine without Ray: CPU PyTorch and sepcore
# with its [sweeps,serve] extras (the registry client resolves models:/NAME@ALIAS through MLflow and
# reads checkpoints from S3 with boto3). On a GPU cluster the same app runs on Ray Serve from the Ray
# image (infra/k8s/rayservice-separation.yaml).
#   docker build -f docker/separation.Dockerfile -t REGISTRY/sepcore-separation:0.1.0 .
FROM python:3.11.14-slim-bookworm

RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 sepcore
WORKDIR /opt/sepcore

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml README.md ./
COPY sepcore ./sepcore
COPY sweeps ./sweeps
COPY services ./services
RUN pip install --no-cache-dir ".[sweeps,serve]"

USER sepcore
WORKDIR /home/sepcore
ENV PYTHONUNBUFFERED=1
EXPOSE 8000
# --model comes from the command line (compose: SEPCORE_SERVE_MODEL); the bearer token from
# SEPCORE_SERVE_TOKEN in the environment, never from an argument.
ENTRYPOINT ["python", "-m", "services", "serve", "--host", "0.0.0.0", "--port", "8000"]
