# STAND-IN for postgres:16, built from Debian bookworm's PostgreSQL (15: bookworm has no 16) by
# scripts/build-standin-images.sh. Not the official image. postgres-entrypoint.sh does what the
# official entrypoint does for docker-compose.yml: on an empty data folder it creates the cluster
# with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB, password (scram) logins from any address;
# `pg_isready` is on PATH for the healthcheck.
ARG BASE=distillery-standin/debian:bookworm
FROM ${BASE}
LABEL org.opencontainers.image.description="STAND-IN for postgres (PostgreSQL 15 from Debian bookworm packages); not the official image"
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/postgresql/data /run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /run/postgresql && chmod 700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:$PATH PGDATA=/var/lib/postgresql/data LANG=C.UTF-8
COPY postgres-entrypoint.sh /usr/local/bin/postgres-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["/usr/local/bin/postgres-entrypoint.sh"]
CMD ["postgres"]
