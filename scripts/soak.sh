#!/usr/bin/env bash
# Soak: moves data both ways through a tapstack daemon whose wire loses
# and reorders frames, for DURATION (default 10m): through the relay
# (IPv4 and IPv6), a port forward and the stack's own echo service, many
# connections at once opening and closing, every byte checked by
# SHA-256; then checks that the daemon is back to its memory, goroutines,
# fds and sockets. Needs root. Prints the figures.
#
#   sudo scripts/soak.sh 10m
#   sudo scripts/soak.sh 2m 'loss=5%,reorder=2%,delay=5ms'
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10m}"
impair="${2:-loss=1%,reorder=1%}"
exec go test ./tests -run '^TestSoak$' -count=1 -v -timeout 0 -args -soak "$duration" -soak-impair "$impair"
