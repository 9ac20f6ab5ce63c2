# distillery: API and worker image. PyPI torch wheels for Linux x86_64 bundle CUDA, so the same image
# serves the API and runs GPU workers (docker-compose reserves a GPU for the worker).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY deit_core ./deit_core
COPY distillery ./distillery
COPY server ./server
COPY worker ./worker
COPY migrations ./migrations
RUN pip install ".[executorch]"

RUN useradd --create-home --uid 1000 distillery && mkdir -p /data/storage && chown -R distillery /data
USER distillery
ENV DISTILLERY_STORAGE=/data/storage DISTILLERY_DATA_ROOTS=/data HOME=/home/distillery
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/api/v1/health || exit 1
CMD ["distillery", "serve", "--host", "0.0.0.0", "--port", "8000"]
