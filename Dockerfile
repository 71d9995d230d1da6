# syntax=docker/dockerfile:1.7
# Two images from one file:
#   api    - FastAPI + onnxruntime, no torch (small, starts fast)
#   worker - CUDA runtime + torch/timm for training (also runs on CPU-only hosts)

FROM python:3.11-slim AS api-deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /srv
COPY pyproject.toml README.md ./
# Install dependencies before copying the code so code edits keep this layer cached.
RUN mkdir -p app workers fopro foprokd migrations \
    && touch app/__init__.py workers/__init__.py fopro/__init__.py foprokd/__init__.py \
        migrations/__init__.py \
    && pip install '.[api]' flower \
    && pip uninstall -y fopro-kd-service

FROM api-deps AS api
COPY app ./app
COPY workers ./workers
COPY fopro ./fopro
COPY foprokd ./foprokd
COPY migrations ./migrations
RUN pip install --no-deps . && useradd --create-home --uid 10001 fopro
USER fopro
ENV FOPRO_DATA_DIR=/var/lib/fopro FOPRO_API_HOST=0.0.0.0 FOPRO_API_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["fopro", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM nvidia/cuda:13.0.1-cudnn-runtime-ubuntu24.04 AS worker
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1 \
    DEBIAN_FRONTEND=noninteractive VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv
WORKDIR /srv
COPY pyproject.toml README.md ./
RUN mkdir -p app workers fopro foprokd migrations \
    && touch app/__init__.py workers/__init__.py fopro/__init__.py foprokd/__init__.py \
        migrations/__init__.py \
    && pip install '.[worker]' \
    && pip uninstall -y fopro-kd-service
COPY app ./app
COPY workers ./workers
COPY fopro ./fopro
COPY foprokd ./foprokd
COPY migrations ./migrations
RUN pip install --no-deps . && useradd --create-home --uid 10001 fopro
USER fopro
ENV FOPRO_DATA_DIR=/var/lib/fopro
# One worker process per GPU: pin it with CUDA_VISIBLE_DEVICES.
CMD ["fopro", "worker", "--queues", "gpu"]
