#!/usr/bin/env bash
# Regenerates the pictures of the web page in docs/gui/ (see docs/gui.md):
# a demo network on loopback photographed by headless chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || { echo "needs Debian's chromium package: apt-get install -y --no-install-recommends chromium" >&2; exit 1; }
go run ./scripts/screenshots "$@"
