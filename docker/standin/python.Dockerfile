# STAND-IN for python:3.11-slim, built from Debian bookworm packages (scripts/build-standin-images.sh).
# Not the official image: CPython 3.11 is Debian's (/usr/bin/python3), with venv; `python` is a link
# to it. What distillery's Dockerfile needs of its base: apt-get, `python -m venv`, useradd.
ARG BASE=distillery-standin/debian:bookworm
FROM ${BASE}
LABEL org.opencontainers.image.description="STAND-IN for python:3.11-slim built from Debian bookworm packages; not the official image"
ENV LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && ln -s /usr/bin/python3 /usr/local/bin/python
CMD ["python3"]
