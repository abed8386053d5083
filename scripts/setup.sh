#!/usr/bin/env bash
# Install everything a fresh machine needs, idempotently: Debian's WordNet, a virtual
# environment with torch pinned first, then this package with its dev tools.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -f /usr/share/wordnet/data.noun ]; then
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q wordnet-base
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]"
touch .venv/.installed
