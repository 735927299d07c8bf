# syntax=docker/dockerfile:1.7
# CUDA training image: torch, Ray (also the KubeRay head/worker image), DeepSpeed, transformers.
# Build from the repository root:  docker build -f images/train.Dockerfile -t ghcr.io/coderforge/coderforge-train:0.1.0 .
# Versions: torch and every Python package from pyproject.toml; the CUDA base from
# coderforge/k8s/images.yaml (tests/k8s/test_images.py checks both).
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    DS_BUILD_OPS=0 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/coderforge

# wget: KubeRay's default head/worker probes call it; bash: Ray's start command needs it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates git wget bash python3 python3-venv python3-dev \
    build-essential \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && (userdel --remove ubuntu 2>/dev/null || true) \
 && groupadd --gid ${UID} coderforge \
 && useradd --uid ${UID} --gid ${UID} --create-home --home-dir /home/coderforge --shell /bin/bash coderforge

WORKDIR /opt/coderforge
COPY pyproject.toml README.md ./
COPY images/requirements_for.py images/requirements_for.py
# torch (CUDA build) first; deepspeed is an sdist whose build imports torch, so it is built without
# isolation against the torch just installed; then the remaining pins.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}" \
 && python images/requirements_for.py --exclude torch > /tmp/requirements.txt \
 && grep -E '^deepspeed==' /tmp/requirements.txt > /tmp/deepspeed.txt \
 && pip install setuptools wheel \
 && pip install --no-build-isolation -r /tmp/deepspeed.txt \
 && pip install -r /tmp/requirements.txt

COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
RUN pip install --no-deps . \
 && pip check \
 && python -c "import coderforge, ray, deepspeed, transformers, torch; print(torch.__version__, torch.version.cuda)"

USER ${UID}:${UID}
WORKDIR /home/coderforge
