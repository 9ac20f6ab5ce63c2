# STAND-IN for redis:7, built from Debian bookworm's redis-server (7.0) by
# scripts/build-standin-images.sh. Not the official image. Like the official one it listens on every
# address without protected mode (the compose network is its only reach), runs as `redis` in /data,
# and `redis-cli ping` answers PONG (the compose healthcheck).
ARG BASE=distillery-standin/debian:bookworm
FROM ${BASE}
LABEL org.opencontainers.image.description="STAND-IN for redis:7 built from Debian bookworm packages; not the official image"
RUN apt-get update \
 && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
CMD ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0", "-::*"]
