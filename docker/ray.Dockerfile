# The Ray image of the platform: Ray 2.60 (GPU build, Python 3.11), the CUDA build of PyTorch and
# sepcore with its [sweeps,serve] extras. One image for the head, the GPU workers, RayJob
# submitters and the RayService replicas: a RayJob cannot upload a working directory, so the code
# and the sweep files are baked in (/home/ray/sepcore).
#   docker build -f docker/ray.Dockerfile -t REGISTRY/sepcore-ray:0.1.0 .
FROM rayproject/ray:2.60.0-py311-gpu

# ffmpeg: musdb/museval decode through it
USER root
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg \
    && rm -rf /var/lib/apt/lists/*
USER ray
WORKDIR /home/ray/sepcore

# The image ships no PyTorch: the CUDA wheel first, so that installing the project keeps it
# (pyproject admits torch>=2.4 and never replaces an installed build).
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users sepcore ./sepcore
COPY --chown=ray:users sweeps ./sweeps
COPY --chown=ray:users services ./services
RUN pip install --no-cache-dir ".[sweeps,serve]" "ray[default,serve,tune]==2.60.0" \
    && python -c "import sepcore, sweeps, services, ray; assert ray.__version__.startswith('2.60')"

ENV PYTHONUNBUFFERED=1
