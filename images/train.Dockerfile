# Training image: torch, Ray (also the KubeRay head/worker image), DeepSpeed, transformers. Steps: the
# Ray steps (pretraining, SFT, DPO). One Dockerfile, two variants (coderforge/k8s/images.yaml):
#   coderforge-train      CUDA base + CUDA torch: the default, for clusters;
#   coderforge-train-cpu  CPU base + CPU torch, no compilers: local runs and CI
#                         (BASE_IMAGE=python:3.11-slim-bookworm TORCH_INDEX=https://download.pytorch.org/whl/cpu
#                          BUILD_TOOLS=).
# Build every image:  coderforge images build   (the CUDA variant: coderforge images build --variant cuda)
# Versions: torch and every Python package from pyproject.toml; BASE_IMAGE and TORCH_INDEX from
# coderforge/k8s/images.yaml (tests/k8s/test_images.py checks both). Other build arguments: as in
# images/data.Dockerfile (pip sources, images/ca-certificates/). TORCH_INDEX empty: torch comes from pip's
# configured sources (a local wheel directory in PIP_FIND_LINKS).
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG UID=10001
# wget: KubeRay's default head/worker probes call it; bash: Ray's start command needs it.
# build-essential, python3-dev: Triton compiles its launcher with gcc against Python.h at run time (CUDA).
ARG BUILD_TOOLS="build-essential python3-dev"
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    DS_BUILD_OPS=0 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/coderforge

# 1. system layer
COPY images/ca-certificates/ /usr/local/share/ca-certificates/extra/
COPY images/system.sh /usr/local/lib/coderforge/system.sh
RUN sh /usr/local/lib/coderforge/system.sh "${UID}" git wget bash ${BUILD_TOOLS}

# 2. Python dependencies: torch first from TORCH_INDEX; deepspeed is an sdist whose build imports torch,
# so it is built without isolation against the torch just installed; then the remaining pins.
WORKDIR /opt/coderforge
COPY pyproject.toml ./
COPY images/requirements_for.py images/
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu128
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
RUN pip install --upgrade pip \
 && python images/requirements_for.py --build-system > /tmp/build.txt \
 && pip install -r /tmp/build.txt \
 && if [ -n "${TORCH_INDEX}" ]; then pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"; \
    else pip install "torch==${TORCH_VERSION}"; fi \
 && python images/requirements_for.py --exclude torch > /tmp/requirements.txt \
 && grep -E '^deepspeed==' /tmp/requirements.txt > /tmp/deepspeed.txt \
 && pip install --no-build-isolation -r /tmp/deepspeed.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/build.txt /tmp/requirements.txt /tmp/deepspeed.txt

# 3. the source
COPY README.md ./
COPY images/check_env.py images/
COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
RUN pip install --no-deps --no-build-isolation . \
 && rm -rf build *.egg-info \
 && python images/check_env.py --import coderforge,components,pipelines,ray,deepspeed,transformers,torch \
 && python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

USER ${UID}:${UID}
WORKDIR /home/coderforge
