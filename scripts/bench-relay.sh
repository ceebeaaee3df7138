#!/usr/bin/env bash
# Relay throughput, side by side in one run: a namespace reaches an iperf3
# server on its host through (a) a kernel veth pair, (b) tapstack run,
# (c) slirp4netns, (d) pasta. TCP, one stream, both directions.
#
# Everything happens inside an outer namespace of its own (the "host"),
# whose only server is iperf3 on 198.51.100.1; nothing leaves it.
#
#   sudo scripts/bench-relay.sh            # T=5 seconds per case
#   sudo T=10 MTU=65520 scripts/bench-relay.sh
set -euo pipefail
T=${T:-5}
MTU=${MTU:-65520}
BIN=${TAPSTACK:-}
cd "$(dirname "$0")/.."
if [ -z "$BIN" ]; then
	BIN=$(mktemp -d)/tapstack
	CGO_ENABLED=0 go build -o "$BIN" ./cmd/tapstack
fi
OUTER=tsbench-$$
VETH=tsbv-$$
SRV=198.51.100.1

cleanup() {
	if [ -n "${IPERF_PID:-}" ]; then kill "$IPERF_PID" 2>/dev/null || true; fi
	ip netns del "$VETH" 2>/dev/null || true
	ip netns del "$OUTER" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$OUTER"
ip -n "$OUTER" link set lo up
ip -n "$OUTER" addr add $SRV/32 dev lo
ip netns exec "$OUTER" iperf3 -s -B $SRV >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5

# iperf3 JSON on stdin → Gbit/s received.
gbps() { python3 -c 'import json,sys; d=json.load(sys.stdin); print("%.2f" % (d["end"]["sum_received"]["bits_per_second"]/1e9))' 2>/dev/null || echo "fail"; }

# The kernel: a veth pair from a namespace into the outer one.
ip netns add "$VETH"
ip -n "$OUTER" link add tsbv0 mtu "$MTU" type veth peer name tsbv1 mtu "$MTU" netns "$VETH"
ip -n "$OUTER" addr add 192.0.2.1/24 dev tsbv0
ip -n "$OUTER" link set tsbv0 up
ip -n "$VETH" addr add 192.0.2.2/24 dev tsbv1
ip -n "$VETH" link set tsbv1 up
ip -n "$VETH" link set lo up
ip -n "$VETH" route add default via 192.0.2.1
# pasta wants an "external" interface with a default route to copy.
ip -n "$OUTER" route add default via 192.0.2.2 dev tsbv0

declare -A R
run_case() { # name, then the command that runs "$@" in the namespace
	local name=$1; shift
	R[$name,up]=$("$@" iperf3 -c $SRV -t "$T" -J | gbps)
	R[$name,down]=$("$@" iperf3 -c $SRV -t "$T" -R -J | gbps)
	printf '%-22s ns→host %6s Gbit/s   host→ns %6s Gbit/s\n' "$name" "${R[$name,up]}" "${R[$name,down]}" >&2
}

kernel() { ip netns exec "$VETH" "$@"; }
tapstack() { ip netns exec "$OUTER" "$BIN" run --mtu "$MTU" -- "$@"; }
slirp() {
	local fifo
	fifo=$(mktemp -u /tmp/tsbench-slirp-XXXXXX)
	mkfifo "$fifo"
	ip netns exec "$OUTER" sh -c '
		fifo=$1; mtu=$2; shift 2
		unshare -rn sh -c "read x < $fifo; exec \"\$@\"" - "$@" &
		C=$!
		slirp4netns --configure --mtu="$mtu" --disable-host-loopback $C tap0 >/dev/null 2>&1 &
		S=$!
		sleep 0.5
		echo go > "$fifo"
		wait $C; R=$?
		kill $S
		exit $R' - "$fifo" "$MTU" "$@"
	rm -f "$fifo"
}
pastacase() { ip netns exec "$OUTER" pasta --runas 0:0 --config-net -q -m "$MTU" -- "$@" 2>/dev/null; }

echo "relay throughput, iperf3 TCP 1 stream, ${T}s each, MTU $MTU" >&2
run_case "kernel veth" kernel
run_case "tapstack run" tapstack
if command -v slirp4netns >/dev/null; then run_case "slirp4netns" slirp; fi
if command -v pasta >/dev/null; then run_case "pasta" pastacase; fi

echo
printf '| path | ns→host Gbit/s | host→ns Gbit/s | ×kernel ↑ | ×kernel ↓ |\n|---|---|---|---|---|\n'
for n in "kernel veth" "tapstack run" "slirp4netns" "pasta"; do
	[ -n "${R[$n,up]:-}" ] || continue
	python3 - "$n" "${R[$n,up]}" "${R[$n,down]}" "${R[kernel veth,up]}" "${R[kernel veth,down]}" <<'PY'
import sys
n, u, d, ku, kd = sys.argv[1:]
def r(a, b):
    try: return "%.2f" % (float(a) / float(b))
    except ValueError: return "-"
print("| %s | %s | %s | %s | %s |" % (n, u, d, r(u, ku), r(d, kd)))
PY
done
