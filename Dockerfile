# distillery: API and worker image. PyPI torch wheels for Linux x86_64 bundle CUDA, so the same image
# serves the API and runs GPU workers (docker-compose reserves a GPU for the `gpu` profile's worker).
#
# PYTHON_IMAGE: the base (docker-compose passes DISTILLERY_PYTHON_IMAGE); a machine that cannot pull
# builds a stand-in with scripts/build-standin-images.sh. Dependencies come from PyPI, or, where
# ./wheelhouse/ holds wheels (`scripts/build-standin-images.sh --wheelhouse`), from those alone.
ARG PYTHON_IMAGE=python:3.11-slim

# ---- build: a virtual environment in /opt/venv. The wheelhouse stays in this stage, so the image
# does not carry its gigabytes twice.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv
COPY wheelhouse/ /wheelhouse/
WORKDIR /src
# First the dependencies alone (pyproject.toml without the packages installs them and an empty
# distillery), so editing the source does not reinstall torch; then the packages themselves.
COPY pyproject.toml README.md ./
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi \
 && pip install "$@" ".[executorch]"
COPY deit_core ./deit_core
COPY distillery ./distillery
COPY server ./server
COPY worker ./worker
COPY migrations ./migrations
RUN if ls /wheelhouse/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheelhouse; fi \
 && pip install --no-deps --force-reinstall "$@" . \
 && python -c "import deit_core, distillery, migrations, server, worker"

# ---- the image
FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PATH=/opt/venv/bin:$PATH
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN useradd --create-home --uid 1000 distillery && mkdir -p /data/storage && chown -R distillery /data
USER distillery
WORKDIR /home/distillery
ENV DISTILLERY_STORAGE=/data/storage DISTILLERY_DATA_ROOTS=/data HOME=/home/distillery
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s CMD curl -fsS http://127.0.0.1:8000/api/v1/health || exit 1
CMD ["distillery", "serve", "--host", "0.0.0.0", "--port", "8000"]
