#!/usr/bin/env bash
# Installs what the browser tests and the web benchmark need, if missing: headless Chromium and
# its driver from Debian, selenium from PyPI.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "installing chromium and chromium-driver (apt-get)" >&2
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >&2
fi
if ! python3 -c 'import selenium' >/dev/null 2>&1; then
  echo "installing selenium (pip)" >&2
  # (A Debian system Python refuses pip installs outside a venv: PEP 668.)
  python3 -m pip install --quiet selenium >&2 || python3 -m pip install --quiet --break-system-packages selenium >&2
fi
