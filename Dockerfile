# Switchboard server image: the same package `make run` installs, without dev extras.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 HF_HUB_OFFLINE=1
WORKDIR /app

# CPU-only torch first, so sentence-transformers does not pull a CUDA build.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"

COPY pyproject.toml README.md ./
COPY graphs ./graphs
COPY nodes ./nodes
COPY stores ./stores
COPY server ./server
COPY langgraph.json ./
RUN pip install .

RUN useradd --create-home --uid 10001 switchboard && mkdir -p /data && chown switchboard /data
USER switchboard
EXPOSE 8000
CMD ["switchboard", "serve"]
