#!/usr/bin/env bash
# System calls, context switches and CPU time of the daemon per TCP
# request/response exchange of 1 byte, through tapstack's relay (both
# engines), slirp4netns and pasta, counted with perf stat.
#
# A client in a namespace makes N 1-byte exchanges (TCP_NODELAY) over one
# TCP connection to an echo server in an outer namespace of the script's
# own (the "host"); perf stat counts the daemon that carries them
# (raw_syscalls:sys_enter, context-switches, task-clock) from just before
# the first exchange to just after the last. Nothing leaves the outer
# namespace. Prints a Markdown table.
#
# MODE=udp counts a stream of UDP datagrams instead: iperf3 in the
# namespace sends LEN-byte datagrams at RATE for SECS seconds to an
# iperf3 server in the outer namespace, and the daemon's counts are given
# per datagram it relayed into the outer namespace (counted by that
# namespace's kernel), beside the share of the sent datagrams relayed and
# what the server received.
#
#   sudo scripts/perf-exchange.sh /path/to/tapstack
#   sudo N=50000 MTU=1500 scripts/perf-exchange.sh /path/to/tapstack
#   sudo MODE=udp RATE=1G scripts/perf-exchange.sh /path/to/tapstack
#
# Needs ip, python3 and perf (with the raw_syscalls tracepoints), and
# iperf3 for MODE=udp;
# slirp4netns and pasta are measured when installed.
set -euo pipefail
# shellcheck source=scripts/lib-netns.sh
. "$(dirname "$0")/lib-netns.sh"

BIN=${1:?usage: perf-exchange.sh TAPSTACK-BINARY}
N=${N:-20000}
MTU=${MTU:-65520}
WARMUP=${WARMUP:-500}
MODE=${MODE:-rr}
RATE=${RATE:-1G}
LEN=${LEN:-1400}
SECS=${SECS:-5}
IPERF_PORT=5201
SRV=198.51.100.1
PORT=7

case $BIN in /*) ;; *) BIN=$PWD/$BIN ;; esac
[ -x "$BIN" ] || { echo "perf-exchange.sh: $BIN is not executable" >&2; exit 1; }
case $MODE in
rr) ;;
udp) command -v iperf3 >/dev/null || { echo "perf-exchange.sh: MODE=udp needs iperf3 on PATH" >&2; exit 1; } ;;
*) echo "perf-exchange.sh: MODE is rr or udp, not $MODE" >&2; exit 1 ;;
esac
for tool in ip python3 perf; do
	command -v "$tool" >/dev/null || { echo "perf-exchange.sh: needs $tool on PATH" >&2; exit 1; }
done

OUTER=tspx-$$
NAMESPACES=()
PIDS=()
TMP=$(mktemp -d /tmp/tspx-XXXXXX)

cleanup() {
	# The client, if a case was cut short.
	if [ -n "${CLIENT_PID:-}" ]; then kill "$CLIENT_PID" 2>/dev/null || true; fi
	if [ -n "${PERF_PID:-}" ]; then kill "$PERF_PID" 2>/dev/null || true; fi
	stop_pids "${PIDS[@]}"
	del_namespaces
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# track PID: a daemon to stop on exit.
track() { PIDS+=("$1"); }

# The "host": the echo server on its loopback.
outer_host "$OUTER" tspx

ip netns exec "$OUTER" python3 -c "$ECHO_SERVER" "$SRV" "$PORT" &
track $!

# The client: warms the connection up, says "ready", waits for a line,
# makes N exchanges, prints "done AVG-RTT-µs", waits for a line, exits.
PY_CLIENT='
import socket, sys, time
host, port, n, warm = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.create_connection((host, port), timeout=10)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def run(m):
    for _ in range(m):
        s.send(b"x")
        if s.recv(64) != b"x":
            sys.exit("echo broke off")
run(warm)
print("ready", flush=True)
sys.stdin.readline()
t = time.perf_counter()
run(n)
print("done %.2f" % ((time.perf_counter() - t) / n * 1e6), flush=True)
sys.stdin.readline()
s.close()
'

# The echo server answers (from the outer namespace itself).
wait_for "the echo server" ip netns exec "$OUTER" python3 -c \
	'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$SRV" "$PORT"

ROWS=()

if [ "$MODE" = udp ]; then
	ip netns exec "$OUTER" iperf3 -s -B "$SRV" -p "$IPERF_PORT" >/dev/null 2>&1 &
	track $!
	wait_for "the iperf3 server" ip netns exec "$OUTER" python3 -c \
		'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$SRV" "$IPERF_PORT"
fi

# perf_row NAME PERF-CSV COUNT EXTRA...: one table row of the counts in
# PERF-CSV divided by COUNT, then the EXTRA columns.
perf_row() {
	local name=$1 perfout=$2 count=$3 sys cs clock
	shift 3
	# perf -x, lines: value,unit,event,...; task-clock is in ms.
	sys=$(awk -F, '$3 ~ /^raw_syscalls:sys_enter/ {print $1}' "$perfout")
	cs=$(awk -F, '$3 ~ /^context-switches/ {print $1}' "$perfout")
	clock=$(awk -F, '$3 ~ /^task-clock/ {print $1}' "$perfout")
	ROWS+=("$(awk -v name="$name" -v n="$count" -v sys="$sys" -v cs="$cs" -v clock="$clock" -v extra="$*" \
		'BEGIN { printf "| %s | %.2f | %.2f | %.2f | %s |", name, sys / n, cs / n, clock * 1000 / n, extra }')")
	echo "measured $name: ${ROWS[-1]}" >&2
}

# udp_in: the datagrams the outer namespace's kernel took in so far
# (delivered to a socket, or dropped there for a full receive buffer).
udp_in() {
	ip netns exec "$OUTER" awk '$1 == "Udp:" && $2 ~ /^[0-9]+$/ {print $2 + $6}' /proc/net/snmp
}

# measure_udp NAME NS DAEMON-PID: iperf3 sends datagrams from NS; counts
# DAEMON-PID per datagram it relayed into the outer namespace.
measure_udp() {
	local name=$1 ns=$2 pid=$3 perfout=$TMP/perf-$1.csv json=$TMP/iperf-$1.json got in0 in1
	in0=$(udp_in)
	perf stat -x, -o "$perfout" -e raw_syscalls:sys_enter,context-switches,task-clock -p "$pid" &
	PERF_PID=$!
	sleep 0.5 # perf opens its counters
	if ! ip netns exec "$ns" iperf3 -c "$SRV" -p "$IPERF_PORT" -u -b "$RATE" -l "$LEN" -t "$SECS" -J >"$json" 2>&1; then
		echo "perf-exchange.sh: $name: iperf3 failed: $(head -c 300 "$json")" >&2
		ROWS+=("| $name | failed | | | | | |")
		kill -INT "$PERF_PID" 2>/dev/null || true
		wait "$PERF_PID" || true
		PERF_PID=
		return
	fi
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" || true
	PERF_PID=
	in1=$(udp_in)
	# relayed, then the share of the sent datagrams relayed, the rate
	# the server received and its loss.
	got=$(python3 -c '
import json, sys
end = json.load(open(sys.argv[1]))["end"]
s, relayed = end["sum"], int(sys.argv[2])
print(relayed, "%.1f | %.2f | %.1f" % (100 * relayed / s["packets"], end["sum_received"]["bits_per_second"] / 1e9, s["lost_percent"]))
' "$json" "$((in1 - in0))")
	perf_row "$name" "$perfout" "${got%% *}" "${got#* }"
}

# measure NAME NS DAEMON-PID: runs the client in NS and counts DAEMON-PID.
measure() {
	if [ "$MODE" = udp ]; then
		measure_udp "$@"
		return
	fi
	local name=$1 ns=$2 pid=$3 line rtt perfout=$TMP/perf-$1.csv
	coproc CLIENT { exec ip netns exec "$ns" python3 -c "$PY_CLIENT" "$SRV" "$PORT" "$N" "$WARMUP" 2>&1; }
	if ! read -r -t 60 line <&"${CLIENT[0]}" || [ "$line" != ready ]; then
		echo "perf-exchange.sh: $name: client did not start: ${line:-}" >&2
		ROWS+=("| $name | failed | | | |")
		kill "$CLIENT_PID" 2>/dev/null || true
		wait "$CLIENT_PID" 2>/dev/null || true
		CLIENT_PID=
		return
	fi
	perf stat -x, -o "$perfout" -e raw_syscalls:sys_enter,context-switches,task-clock -p "$pid" &
	PERF_PID=$!
	sleep 0.5 # perf opens its counters
	echo go >&"${CLIENT[1]}"
	line=
	read -r -t 600 line <&"${CLIENT[0]}" || true
	kill -INT "$PERF_PID" 2>/dev/null || true
	wait "$PERF_PID" || true
	PERF_PID=
	echo bye >&"${CLIENT[1]}" || true
	wait "$CLIENT_PID" 2>/dev/null || true
	CLIENT_PID=
	case $line in
	done\ *) rtt=${line#done } ;;
	*)
		echo "perf-exchange.sh: $name: client failed: $line" >&2
		ROWS+=("| $name | failed | | | |")
		return
		;;
	esac
	perf_row "$name" "$perfout" "$N" "$rtt"
}

# tapstack's relay: the daemon runs in the outer namespace and serves NS.
tapstack_case() {
	local name=$1 engine=$2 ns=tspx$2-$$ pid
	newns "$ns"
	ip netns exec "$OUTER" "$BIN" up --netns "$ns" --mtu "$MTU" --control "$TMP/$ns.sock" \
		--serve none --relay-engine "$engine" --tx-queues 1 >"$TMP/$ns.out" 2>"$TMP/$ns.err" &
	pid=$!
	track "$pid"
	if ! wait_for "tapstack up ($engine)" grep -q '^ready' "$TMP/$ns.out"; then
		cat "$TMP/$ns.err" >&2
		ROWS+=("| $name | failed | | | |")
		stop_pids "$pid"
		return
	fi
	measure "$name" "$ns" "$pid"
	stop_pids "$pid"
}

tapstack_case "tapstack relay (stack engine)" stack
tapstack_case "tapstack relay (flow engine)" flow

# slirp4netns: its host side in the outer namespace, its TAP in NS.
if command -v slirp4netns >/dev/null; then
	ns=tspxs-$$
	newns "$ns"
	if start_slirp "$OUTER" "$ns"; then
		track "$PEER_PID"
		measure slirp4netns "$ns" "$PEER_PID"
	else
		track "$PEER_PID"
		ROWS+=("| slirp4netns | failed | | | |")
	fi
	stop_pids "$PEER_PID"
else
	echo "perf-exchange.sh: slirp4netns not installed, skipped" >&2
fi

# pasta: joins NS, copies the outer namespace's addresses and routes.
if command -v pasta >/dev/null; then
	ns=tspxp-$$
	newns "$ns"
	if start_pasta "$OUTER" "$ns"; then
		track "$PEER_PID"
		measure pasta "$ns" "$PEER_PID"
	else
		track "$PEER_PID"
		ROWS+=("| pasta | failed | | | |")
	fi
	stop_pids "$PEER_PID"
else
	echo "perf-exchange.sh: pasta not installed, skipped" >&2
fi

if [ "$MODE" = udp ]; then
	echo "UDP datagrams of $LEN bytes at $RATE for $SECS s from the namespace, MTU $MTU; the daemon's counts (perf stat -p) per datagram it relayed into the outer namespace:"
	echo
	echo "| path | syscalls/datagram | context switches/datagram | CPU µs/datagram | relayed % of sent | server received Gbit/s | server loss % |"
	echo "|---|---|---|---|---|---|---|"
else
	echo "$N exchanges of 1 byte each way over one TCP connection, MTU $MTU; the daemon's counts (perf stat -p) per exchange:"
	echo
	echo "| path | syscalls/exchange | context switches/exchange | CPU µs/exchange | avg RTT µs |"
	echo "|---|---|---|---|---|"
fi
printf '%s\n' "${ROWS[@]}"
