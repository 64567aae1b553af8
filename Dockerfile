# syntax=docker/dockerfile:1.7
# Two serving targets from one file:
#   docker build --target cpu -t vertical-qa:cpu .   (python slim, CPU torch, fp32)
#   docker build --target gpu -t vertical-qa:gpu .   (CUDA runtime base, CUDA torch, bf16)
# Builder stages hold pip and any compiler; the final stages get only the virtual environment and the app.

ARG TORCH_VERSION=2.13.0
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu

# ---------------------------------------------------------------- CPU
FROM python:3.11-slim-bookworm AS cpu-builder
ARG TORCH_VERSION
ARG TORCH_CPU_INDEX
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the CPU index: a plain `pip install torch` would pull the multi-GB CUDA build.
RUN pip install --index-url "$TORCH_CPU_INDEX" "torch==${TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY kg ./kg
COPY domain ./domain
COPY training ./training
RUN pip install .

FROM python:3.11-slim-bookworm AS cpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    VQA_HOST=0.0.0.0 \
    VQA_PORT=8000 \
    VQA_MODEL_PATH=/app/models/minilm-squad \
    VQA_PACK=/app/packs/fintech \
    VQA_KG_DATA_DIR=/tmp/vqa-graph \
    VQA_MODEL_REGISTRY=/app/registry/registry.json \
    VQA_STORE_PATH=/tmp/vqa-feedback.sqlite3
RUN groupadd --system vqa && useradd --system --gid vqa --home-dir /app --shell /usr/sbin/nologin vqa
COPY --from=cpu-builder /opt/venv /opt/venv
WORKDIR /app
# The default model is baked in; mount another and set VQA_MODEL_PATH to serve it instead.
COPY --chown=vqa:vqa models ./models
COPY --chown=vqa:vqa packs ./packs
# the model registry (vqa promote / rollback) is written here; mount a volume to keep it
RUN mkdir -p /app/registry && chown vqa:vqa /app/registry
USER vqa
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["vqa", "serve"]

# ---------------------------------------------------------------- GPU
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-builder
ARG GPU_TORCH_VERSION=2.11.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${GPU_TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY kg ./kg
COPY domain ./domain
COPY training ./training
RUN pip install .

FROM gpu-base AS gpu
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VQA_HOST=0.0.0.0 \
    VQA_PORT=8000 \
    VQA_DEVICE=cuda \
    VQA_MAX_BATCH_WINDOWS=64 \
    VQA_MODEL_PATH=/app/models/minilm-squad \
    VQA_PACK=/app/packs/fintech \
    VQA_KG_DATA_DIR=/tmp/vqa-graph \
    VQA_MODEL_REGISTRY=/app/registry/registry.json \
    VQA_STORE_PATH=/tmp/vqa-feedback.sqlite3
RUN groupadd --system vqa && useradd --system --gid vqa --home-dir /app --shell /usr/sbin/nologin vqa
COPY --from=gpu-builder /opt/venv /opt/venv
WORKDIR /app
COPY --chown=vqa:vqa models ./models
COPY --chown=vqa:vqa packs ./packs
# the model registry (vqa promote / rollback) is written here; mount a volume to keep it
RUN mkdir -p /app/registry && chown vqa:vqa /app/registry
USER vqa
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
CMD ["vqa", "serve"]
