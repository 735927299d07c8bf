# CPU data image: ingest, filters, dedup, decontamination, tokenizer, packing, seeds, verification (the
# sandbox), the KFP bookkeeping steps, and the chart's MLflow server. No torch: no step of this image
# imports it (the training and generation images have it).
# Build every image:  coderforge images build   (or, from the repository root:
#   docker build -f images/data.Dockerfile -t ghcr.io/coderforge/coderforge-data:0.1.0 .)
# Every Python package version comes from pyproject.toml (images/requirements_for.py); BASE_IMAGE is
# checked against coderforge/k8s/images.yaml by tests/k8s/test_images.py.
# Build arguments: BASE_IMAGE (any Debian/Ubuntu with python3; `coderforge images build` makes one with
# debootstrap where no registry is reachable); PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS,
# PIP_TRUSTED_HOST (pip's own variables: a mirror, a local index, a wheel directory served over HTTP);
# extra CA certificates: *.crt files in images/ca-certificates/ (`coderforge images build --ca-cert`).
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG UID=10001
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/coderforge

# 1. system layer (changes with the base or the CA certificates only); git: git sources at ingest.
# SANDBOX_TOOLCHAINS: what `verify` runs generated code with besides Python (the sandbox's languages:
# javascript = node, java = javac/java, cpp = g++); empty leaves an image that verifies Python only.
ARG SANDBOX_TOOLCHAINS="g++ nodejs default-jdk-headless"
COPY images/ca-certificates/ /usr/local/share/ca-certificates/extra/
COPY images/system.sh /usr/local/lib/coderforge/system.sh
RUN sh /usr/local/lib/coderforge/system.sh "${UID}" git ${SANDBOX_TOOLCHAINS}

# 2. Python dependencies from pyproject.toml alone, so this layer is reused while only the source changes
WORKDIR /opt/coderforge
COPY pyproject.toml ./
COPY images/requirements_for.py images/
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
RUN pip install --upgrade pip \
 && python images/requirements_for.py --build-system > /tmp/build.txt \
 && python images/requirements_for.py --exclude torch,deepspeed --extras server > /tmp/requirements.txt \
 && pip install -r /tmp/build.txt -r /tmp/requirements.txt \
 && rm /tmp/build.txt /tmp/requirements.txt

# 3. the source
COPY README.md ./
COPY images/check_env.py images/
COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
RUN pip install --no-deps --no-build-isolation . \
 && rm -rf build *.egg-info \
 && python images/check_env.py --missing-ok torch,deepspeed --import coderforge,components,pipelines,kfp,ray,mlflow

USER ${UID}:${UID}
WORKDIR /home/coderforge
