#!/bin/sh
# System layer shared by every image (run by the Dockerfiles as root): Debian/Ubuntu packages, the
# extra CA certificates copied to /usr/local/share/ca-certificates/extra, the Python virtualenv
# /opt/venv (every Python package of an image goes there, never into the system Python, which the
# sandbox runs programs on), and the unprivileged user (uid/gid $1) the image runs as.
# Usage: system.sh UID PACKAGE...
# python3 and python3-venv are installed only where the base lacks a Python with venv (CUDA bases);
# python:3.11-slim and the debootstrap base have one.
set -eu
uid="$1"
shift
pkgs="ca-certificates $*"
if ! python3 -c "import ensurepip, venv" >/dev/null 2>&1; then
    pkgs="$pkgs python3 python3-venv"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update
# shellcheck disable=SC2086
apt-get install -y --no-install-recommends $pkgs
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
update-ca-certificates
python3 -m venv /opt/venv
# a base's own user with our uid (Ubuntu's "ubuntu" is 1000, so normally none)
if getent passwd "$uid" >/dev/null; then userdel --remove "$(getent passwd "$uid" | cut -d: -f1)"; fi
groupadd --gid "$uid" coderforge 2>/dev/null || true
useradd --uid "$uid" --gid "$uid" --create-home --home-dir /home/coderforge --shell /bin/bash coderforge
