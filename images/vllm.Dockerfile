# vLLM generation image (synthetic instruction data, evaluation sampling). It runs the synthesise step
# and, on Kubernetes, the chart's vLLM server (helm/coderforge/templates/vllm.yaml): the Deployment sets
# the command (`python -m vllm.entrypoints.openai.api_server ...`, as coderforge.generate.vllm_server
# does locally) and an init container copies the model from object storage with coderforge.storage
# (the minio client comes from pyproject.toml). No ENTRYPOINT/CMD: every user sets its own command.
# Build-essential and python3-dev stay: Triton compiles its launcher with gcc against Python.h at run time.
# Build from the repository root:  docker build -f images/vllm.Dockerfile -t ghcr.io/coderforge/coderforge-vllm:0.1.0 .
# vLLM pins its own torch/transformers/numpy, which differ from pyproject.toml's, so those come
# from vLLM and every other package from pyproject.toml (images/requirements_for.py).
# VLLM_VERSION and CUDA_BASE are checked against coderforge/k8s/images.yaml by tests/k8s/test_images.py.
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${CUDA_BASE}

ARG VLLM_VERSION=0.33.0
ARG UID=10001

ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    HF_HUB_OFFLINE=1 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    TOKENIZERS_PARALLELISM=false \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/coderforge

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
RUN pip install "vllm==${VLLM_VERSION}" \
 && python images/requirements_for.py --exclude torch,transformers,tokenizers,numpy,deepspeed > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

COPY coderforge coderforge
COPY components components
COPY pipelines pipelines
# --no-deps: coderforge's own torch/transformers pins are deliberately not applied here.
RUN pip install --no-deps . \
 && python -c "import coderforge, vllm, kfp; print(vllm.__version__)"

USER ${UID}:${UID}
WORKDIR /home/coderforge
# the OpenAI-compatible server's port (chart: Service <fullname>-vllm:8000)
EXPOSE 8000
