#!/usr/bin/env bash
# System packages the test suite needs beyond the Python ones: Debian's Chromium for the
# Playwright browser tests (tests/browser), which drive it via executable_path=/usr/bin/chromium
# because `playwright install` cannot download browsers in CI. Idempotent: does nothing when
# Chromium is already there. Run as root (CI containers) or with sudo available.
set -euo pipefail

CHROMIUM="${DISTILLERY_CHROMIUM:-/usr/bin/chromium}"

if [ -x "$CHROMIUM" ]; then
    echo "ci-deps: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "ci-deps: need root or sudo to apt-get install chromium" >&2; exit 1; }
    SUDO="sudo"
fi

echo "ci-deps: installing chromium with apt-get"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
"$CHROMIUM" --version
