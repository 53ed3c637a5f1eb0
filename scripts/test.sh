#!/usr/bin/env bash
# The README's second command (and what CI runs, via .ci/run): install what the
# tests need (Debian packages and ./.venv), then run the whole suite.
# Needs only bash and apt (a minimal Debian 12): no make, git or python3 beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
exec .venv/bin/pytest -q "$@"
