#!/usr/bin/env bash
# Installs everything the tests need (Python packages, Debian's Chromium for the browser tests) and runs them.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v chromium >/dev/null 2>&1; then
    # Debian's own build: playwright's browser download cannot work without internet access to its CDN.
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
python -m pip install -q -r requirements-dev.txt

python -m ruff check .
python -m pytest "$@"
