# syntax=docker/dockerfile:1.7
# CPU data image: ingest, filters, dedup, tokenizer, packing, evaluation, the KFP bookkeeping steps.
# Build from the repository root:  docker build -f images/data.Dockerfile -t ghcr.io/coderforge/coderforge-data:0.1.0 .
# Every Python package version comes from pyproject.toml (images/requirements_for.py); the ARGs
# below are checked against pyproject.toml / coderforge/k8s/images.yaml by tests/k8s/test_images.py.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG UID=10001

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HOME=/home/coderforge

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git wget \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid ${UID} coderforge \
 && useradd --uid ${UID} --gid ${UID} --create-home --home-dir /home/coderforge --shell /bin/bash coderforge

WORKDIR /opt/coderforge
COPY pyproject.toml README.md ./
COPY images/requirements_for.py images/requirements_for.py
# torch first from the CPU index (the PyPI wheel would pull CUDA libraries), then the pinned rest.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && python images/requirements_for.py --exclude torch --extras server > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
RUN pip install --no-deps . \
 && pip check \
 && python -c "import coderforge, components, pipelines, kfp, ray, torch; print(torch.__version__)"

USER ${UID}:${UID}
WORKDIR /home/coderforge
