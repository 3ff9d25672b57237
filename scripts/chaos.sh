#!/usr/bin/env bash
# Seeded fault runs of real ferry nodes (docs/chaos.md): builds the ferry
# binary and the harness once, then runs the harness with the given flags.
#
#   scripts/chaos.sh --schedules 3 --seed 1      # quick
#   scripts/chaos.sh --schedules 200             # long run
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-chaos-build-XXXXXX")
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/ferry" ./cmd/ferry
go build -o "$tmp/chaos" ./scripts/chaos
"$tmp/chaos" --ferry "$tmp/ferry" "$@"
