#!/bin/sh
# Build STAND-IN images for machines that cannot pull from a registry: a Debian bookworm base made
# with debootstrap (from the Debian mirror, no registry), and on it python, postgres and redis
# images from Debian's own packages. They are NOT the official python:3.11-slim, postgres:16 and
# redis:7 images; they do for docker-compose.yml what those do (docker/standin/*.Dockerfile says
# what, and where they differ: PostgreSQL is bookworm's 15).
#
#   sudo scripts/build-standin-images.sh [--wheelhouse]
#   eval "$(scripts/build-standin-images.sh --print-env)"   # the variables docker-compose.yml reads
#
# --wheelhouse also fills ./wheelhouse/ (git-ignored) with wheels of every dependency, built by
# this machine's pip from whatever indexes its pip config names, for a Dockerfile build that cannot
# reach PyPI (the Dockerfile installs from ./wheelhouse/ when it holds wheels, else from PyPI).
# Needs: root (debootstrap), debootstrap, docker. DEBIAN_MIRROR overrides the mirror; PIP the pip
# command (default python3 -m pip; e.g. PIP=.venv/bin/pip).
set -eu

PREFIX=distillery-standin
BASE="$PREFIX/debian:bookworm"
PYTHON="$PREFIX/python:3.11"
POSTGRES="$PREFIX/postgres:15"
REDIS="$PREFIX/redis:7"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
HERE="$(cd "$(dirname "$0")/.." && pwd)"

print_env() {
    echo "export DISTILLERY_PYTHON_IMAGE=$PYTHON DISTILLERY_POSTGRES_IMAGE=$POSTGRES DISTILLERY_REDIS_IMAGE=$REDIS"
}

case "${1:-}" in
    --print-env) print_env; exit 0 ;;
    --wheelhouse) WHEELHOUSE=1 ;;
    "") ;;
    *) echo "usage: $0 [--wheelhouse | --print-env]" >&2; exit 2 ;;
esac

echo "NOTE: building STAND-IN images from Debian bookworm packages ($MIRROR)."
echo "      They are not the official python, postgres or redis images; use those where you can pull them."

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    root="$(mktemp -d /var/tmp/distillery-standin-rootfs.XXXXXX)"
    trap 'rm -rf "$root"' EXIT
    echo "== $BASE: debootstrap --variant=minbase bookworm"
    debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$root.log" 2>&1 \
        || { tail -20 "$root.log" >&2; exit 1; }
    rm -f "$root.log"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' -c 'CMD ["bash"]' \
        -m "STAND-IN: debootstrap minbase bookworm from $MIRROR, not an official image" - "$BASE"
    rm -rf "$root"
    trap - EXIT
fi

for pair in "$PYTHON python" "$POSTGRES postgres" "$REDIS redis"; do
    set -- $pair
    echo "== $1 (STAND-IN, Debian packages)"
    docker build -q --build-arg BASE="$BASE" -t "$1" -f "$HERE/docker/standin/$2.Dockerfile" "$HERE/docker/standin"
done

if [ "${WHEELHOUSE:-}" = 1 ]; then
    echo "== ./wheelhouse: wheels of distillery[executorch]'s dependencies, from this machine's pip config"
    # async-timeout: redis needs it on Python < 3.11.3, as in bookworm (3.11.2), not on a newer host
    ${PIP:-python3 -m pip} wheel -q --wheel-dir "$HERE/wheelhouse" "$HERE[executorch]" setuptools wheel pip \
        "async-timeout>=4.0.3"
    rm -f "$HERE"/wheelhouse/distillery-*.whl
fi

echo "Done. These are STAND-INS. For docker-compose.yml:"
print_env
