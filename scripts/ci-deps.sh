#!/usr/bin/env bash
# System packages the test suite needs beyond the Python ones: Debian's Chromium for the
# Playwright browser tests (tests/browser), which drive it via executable_path=/usr/bin/chromium
# because `playwright install` cannot download browsers in CI; and Slurm (slurm-wlm) with munge for
# the Slurm launcher's tests (tests/slurm), whose fixture runs its own two-node cluster on a private
# slurm.conf and munged. Idempotent: installs only what is missing. Run as root (CI containers) or
# with sudo available.
set -euo pipefail

CHROMIUM="${DISTILLERY_CHROMIUM:-/usr/bin/chromium}"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "ci-deps: need root or sudo to apt-get install packages" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
UPDATED=""
apt_install() {
    if [ -z "$UPDATED" ]; then $SUDO apt-get update -q; UPDATED=1; fi
    $SUDO apt-get install -y -q --no-install-recommends "$@"
}

if [ -x "$CHROMIUM" ]; then
    echo "ci-deps: $CHROMIUM present ($("$CHROMIUM" --version 2>/dev/null || echo 'version unknown'))"
else
    echo "ci-deps: installing chromium with apt-get"
    apt_install chromium fonts-dejavu-core
    "$CHROMIUM" --version
fi

# Slurm: the client commands, slurmctld and slurmd (tests/slurm starts its own daemons), and munge.
if command -v sbatch >/dev/null && [ -x /usr/sbin/slurmd ] && [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ]; then
    echo "ci-deps: slurm present ($(/usr/sbin/slurmd -V 2>/dev/null || echo 'version unknown'))"
else
    echo "ci-deps: installing slurm-wlm and munge with apt-get"
    apt_install slurm-wlm munge
fi
# The machine's own munged, for Slurm commands run by hand (the tests start a private one): a key
# owned by munge, mode 0400, and the daemon running.
if [ ! -s /etc/munge/munge.key ]; then
    $SUDO mkdir -p /etc/munge
    $SUDO dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$SUDO chown munge:munge /etc/munge/munge.key && $SUDO chmod 0400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    $SUDO mkdir -p /run/munge && $SUDO chown munge:munge /run/munge
    $SUDO runuser -u munge -- /usr/sbin/munged || echo "ci-deps: warning: could not start munged" >&2
fi
