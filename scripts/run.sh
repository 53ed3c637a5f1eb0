#!/usr/bin/env bash
# The README's first command: install what netbootd needs (Debian packages and
# ./.venv), then run its main job on embedded defaults: `netbootd lab` boots a
# VM against netbootd in private network namespaces, then cleans up.
# Needs only bash and apt (a minimal Debian 12): no make, git or python3 beforehand.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh run
exec .venv/bin/netbootd lab "$@"
