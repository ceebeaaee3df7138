#!/usr/bin/env bash
# Request/response through several paths at once, interleaved: one client
# process holds a TCP connection and a connected UDP socket through each
# path and makes K 1-byte exchanges on one path after another, in a new
# random order every round. Every path sees the same machine at the same
# moments, so the ratios between paths hold on a noisy machine where
# paths measured one after another do not (a run of the bench's RR cases
# moves by up to a third from one run to the next).
#
# Paths: each tapstack binary given (the flow engine, or ENGINE), then
# slirp4netns and pasta when installed. The echo server runs in an outer
# namespace of the script's own (the "host"); nothing leaves it. For each
# path and protocol the script prints the average round trip and the
# daemon's CPU time per exchange (/proc/PID/task/*/schedstat, read around
# each path's own turns), and each path ÷ the best peer.
#
#   sudo scripts/rr-interleaved.sh ./tapstack
#   sudo ROUNDS=500 K=40 scripts/rr-interleaved.sh ./tapstack /tmp/tapstack-old
#   sudo CONNS=10 scripts/rr-interleaved.sh ./tapstack   # connections too
#   sudo ROUNDS=15 BULK=1 scripts/rr-interleaved.sh ./tapstack /tmp/tapstack-old
#   sudo scripts/rr-interleaved.sh ./tapstack=flow ./tapstack=stack
#
# CONNS=N (0: off) also makes N connections per path in each round, one
# after another, interleaved the same way: connect, a 1-byte exchange,
# close; the script prints the time and the daemon's CPU per connection
# (the closing handshake of a turn's last connection may be counted in
# the next turn, whichever path it belongs to: 1 in N). The floor relays
# serve one connection at a time and are left out of it. PAR=P (1) makes
# them from P threads at once, N each: the time per connection is then
# the turn's time over its P × N connections (the inverse of a rate).
#
# BULK=S (0: off) also moves bulk data through each path in each round,
# interleaved the same way: an iperf3 test of S seconds ns→server and one
# server→ns (-R), each path with an iperf3 server of its own in the
# outer namespace; the script prints the median rate over the rounds,
# the daemon's CPU per GB received, and the median over the rounds of
# each path's rate ÷ the first path's in the same round. The floor
# relays are left out of it. STREAMS=N (1) runs each test with N
# parallel streams (-P). Needs iperf3.
#
# A binary given as BINARY=ENGINE runs with --relay-engine ENGINE; a
# binary without that option (a build before the flow engine) runs with
# none, as "tapstack relay".
#
# ROUNDS (300) × K (20) exchanges per path and protocol; MTU (65520);
# ENGINE (flow); PEERS (1: measure slirp4netns and pasta too); FLOOR (0;
# 1: also the two floor relays of scripts/floor-relay, the least a relay
# can do in C and in Go, run on the outer namespace's loopback: their
# ratio is what the language costs an exchange here). Needs ip and
# python3; FLOOR=1 needs cc and go.
set -euo pipefail
# shellcheck source=scripts/lib-netns.sh
. "$(dirname "$0")/lib-netns.sh"

[ $# -ge 1 ] || { echo "usage: rr-interleaved.sh TAPSTACK-BINARY [MORE-BINARIES...]" >&2; exit 2; }
ROUNDS=${ROUNDS:-300}
K=${K:-20}
MTU=${MTU:-65520}
ENGINE=${ENGINE:-flow}
PEERS=${PEERS:-1}
FLOOR=${FLOOR:-0}
CONNS=${CONNS:-0}
PAR=${PAR:-1}
BULK=${BULK:-0}
STREAMS=${STREAMS:-1}
SRV=198.51.100.1
for v in "PEERS=$PEERS" "FLOOR=$FLOOR"; do
	case ${v#*=} in 0 | 1) ;; *) echo "rr-interleaved.sh: $v: want 0 or 1" >&2; exit 2 ;; esac
done
tools="ip python3"
[ "$FLOOR" = 1 ] && tools="$tools cc go"
[ "$BULK" != 0 ] && tools="$tools iperf3"
for tool in $tools; do
	command -v "$tool" >/dev/null || { echo "rr-interleaved.sh: needs $tool on PATH" >&2; exit 1; }
done
numbers() { echo "rr-interleaved.sh: ROUNDS, K, PAR and STREAMS are whole numbers from 1, CONNS and BULK from 0" >&2; exit 2; }
case $ROUNDS,$K,$CONNS,$PAR,$BULK,$STREAMS in *[!0-9,]* | ,* | *,,* | *,) numbers ;; esac
ROUNDS=$((10#$ROUNDS)) K=$((10#$K)) CONNS=$((10#$CONNS)) PAR=$((10#$PAR)) BULK=$((10#$BULK)) STREAMS=$((10#$STREAMS))
[ "$ROUNDS" -ge 1 ] && [ "$K" -ge 1 ] && [ "$PAR" -ge 1 ] && [ "$STREAMS" -ge 1 ] || numbers

TMP=$(mktemp -d /tmp/tsrri-XXXXXX)
OUTER=tsrri-$$
NAMESPACES=()
PIDS=()
cleanup() {
	stop_pids "${PIDS[@]}"
	del_namespaces
	rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The "host": TCP and UDP echo on its loopback.
outer_host "$OUTER" tsrri
ip netns exec "$OUTER" python3 -c "$ECHO_SERVER" "$SRV" 7 &
PIDS+=($!)
wait_for "the echo server" ip netns exec "$OUTER" python3 -c \
	'import socket, sys; socket.create_connection((sys.argv[1], 7), timeout=1).close()' "$SRV"

# PATHS: "name|namespace|daemon PID|address|port" per path.
PATHS=()
n=0
for arg in "$@"; do
	bin=${arg%%=*} engine=$ENGINE
	[ "$bin" = "$arg" ] || engine=${arg#*=}
	case $bin in /*) ;; *) bin=$PWD/$bin ;; esac
	[ -x "$bin" ] || { echo "rr-interleaved.sh: $bin is not executable" >&2; exit 1; }
	n=$((n + 1))
	ns=tsrri$n-$$
	newns "$ns"
	flags=() name="tapstack relay"
	if "$bin" up --help 2>&1 | grep -q -- '-relay-engine'; then
		flags=(--relay-engine "$engine") name="tapstack $engine relay"
	fi
	ip netns exec "$OUTER" "$bin" up --netns "$ns" --mtu "$MTU" --control "$TMP/$ns.sock" --serve none \
		"${flags[@]}" --tx-queues 1 >"$TMP/$ns.out" 2>"$TMP/$ns.err" &
	pid=$!
	PIDS+=("$pid")
	wait_for "tapstack ($bin)" grep -q '^ready' "$TMP/$ns.out" || { cat "$TMP/$ns.err" >&2; exit 1; }
	[ $# -gt 1 ] && name="$name #$n ($(basename "$bin"))"
	PATHS+=("$name|$ns|$pid|$SRV|7")
done
if [ "$PEERS" = 1 ] && command -v slirp4netns >/dev/null; then
	ns=tsrris-$$
	newns "$ns"
	start_slirp "$OUTER" "$ns" || { PIDS+=("$PEER_PID"); exit 1; }
	PIDS+=("$PEER_PID")
	PATHS+=("slirp4netns|$ns|$PEER_PID|$SRV|7")
fi
if [ "$PEERS" = 1 ] && command -v pasta >/dev/null; then
	ns=tsrrip-$$
	newns "$ns"
	start_pasta "$OUTER" "$ns" || { PIDS+=("$PEER_PID"); exit 1; }
	PIDS+=("$PEER_PID")
	PATHS+=("pasta|$ns|$PEER_PID|$SRV|7")
fi
if [ "$FLOOR" = 1 ]; then
	here=$(cd "$(dirname "$0")" && pwd)
	cc -O2 -Wall -Werror -o "$TMP/floor-relay-c" "$here/floor-relay/floor-relay.c"
	(cd "$here/.." && CGO_ENABLED=0 go build -o "$TMP/floor-relay-go" ./scripts/floor-relay/go)
	port=7000
	for lang in c go; do
		port=$((port + 1))
		ip netns exec "$OUTER" "$TMP/floor-relay-$lang" "$port" "$SRV" 7 >"$TMP/floor-$lang.out" 2>&1 &
		pid=$!
		PIDS+=("$pid")
		wait_for "floor-relay-$lang" grep -q '^ready' "$TMP/floor-$lang.out" || { cat "$TMP/floor-$lang.out" >&2; exit 1; }
		PATHS+=("floor relay, $lang|$OUTER|$pid|127.0.0.1|$port")
	done
fi

if [ "$CONNS" -gt 0 ]; then
	# Thousands of connections leave thousands of TIME-WAIT sockets, in
	# the outer namespace (the relays close first towards the server)
	# and in the paths' (the client closes first). Without reuse, each
	# connect searches a port range filling with them, a cost that grows
	# through the run and is not the relay's.
	for ns in "${NAMESPACES[@]}"; do
		ip netns exec "$ns" sysctl -qw net.ipv4.tcp_tw_reuse=1
	done
fi

if [ "$BULK" -gt 0 ]; then
	# One iperf3 server per path (a server runs one test at a time), on
	# port 5201 + the path's place in PATHS.
	for i in "${!PATHS[@]}"; do
		ip netns exec "$OUTER" iperf3 -s -B "$SRV" -p $((5201 + i)) >"$TMP/iperf3-$i.out" 2>&1 &
		PIDS+=($!)
	done
	for i in "${!PATHS[@]}"; do
		wait_for "iperf3 server $i" ip netns exec "$OUTER" python3 -c \
			'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()' "$SRV" $((5201 + i))
	done
fi

python3 - "$ROUNDS" "$K" "$MTU" "$CONNS" "$PAR" "$BULK" "$STREAMS" "${PATHS[@]}" <<'PY'
import ctypes, json, os, random, socket, statistics, subprocess, sys, threading, time

rounds, k, mtu, conns, par, bulk, streams = (int(sys.argv[1]), int(sys.argv[2]), sys.argv[3],
                                             int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]),
                                             int(sys.argv[7]))
paths = [p.split("|") for p in sys.argv[8:]]
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000

def cpu(pid):
    """The daemon's CPU time in ns, summed over its threads."""
    t = 0
    for tid in os.listdir("/proc/%s/task" % pid):
        try:
            t += int(open("/proc/%s/task/%s/schedstat" % (pid, tid)).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended
    return t

home = os.open("/proc/self/ns/net", os.O_RDONLY)

def made_in(ns, make):
    """What make() returns, made in namespace ns (sockets stay in the
    namespace they were made in)."""
    fd = os.open("/run/netns/" + ns, os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        sys.exit("setns %s: %s" % (ns, os.strerror(ctypes.get_errno())))
    try:
        return make()
    finally:
        os.close(fd)
        libc.setns(home, CLONE_NEWNET)

def held(host, port):
    """The TCP connection and the connected UDP socket of a path."""
    t = socket.create_connection((host, port), timeout=10)
    t.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.settimeout(2)
    u.connect((host, port))
    return {"TCP": t, "UDP": u}

# One TCP connection and one UDP socket through each path.
socks = {name: made_in(ns, lambda: held(host, int(port))) for name, ns, pid, host, port in paths}

def run(s, n):
    for _ in range(n):
        s.send(b"x")
        if s.recv(64) != b"x":
            sys.exit("an echo came back wrong")

for name, *_ in paths:  # warm up
    for s in socks[name].values():
        run(s, 200)
def fresh(ns, n):
    """n TCP sockets made in namespace ns, not yet connected."""
    return made_in(ns, lambda: [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)])

def connections(ss, host, port, errors):
    try:
        for s in ss:
            s.settimeout(10)
            s.connect((host, port))
            s.send(b"x")
            if s.recv(64) != b"x":
                raise RuntimeError("an echo came back wrong")
            s.close()
    except Exception as e:  # reported by the turn, in the main thread
        errors.append(e)

def turn(ns, pid, host, port):
    """par threads make conns connections each; the daemon's CPU and the time."""
    ss, errors, go = fresh(ns, par * conns), [], threading.Event()
    def worker(part):
        go.wait()
        connections(part, host, port, errors)
    threads = [threading.Thread(target=worker, args=(ss[i * conns:(i + 1) * conns],)) for i in range(par)]
    for t in threads:
        t.start()
    c0, t0 = cpu(pid), time.perf_counter()
    go.set()
    for t in threads:
        t.join()
    t1, c1 = time.perf_counter(), cpu(pid)
    if errors:
        sys.exit("connections through %s: %s" % (ns, errors[0]))
    return t1 - t0, c1 - c0

def iperf(ns, host, port, reverse):
    """One iperf3 test through namespace ns: (bytes received, seconds)."""
    cmd = ["ip", "netns", "exec", ns, "iperf3", "-c", host, "-p", str(port), "-t", str(bulk), "-P", str(streams), "-J"]
    if reverse:
        cmd.append("-R")
    for _ in range(10):
        p = subprocess.run(cmd, capture_output=True, text=True)
        try:
            j = json.loads(p.stdout)
        except ValueError:
            sys.exit("iperf3 through %s: %s" % (ns, (p.stdout + p.stderr).strip()[-300:]))
        if "server is busy" in j.get("error", ""):  # still ending the last test
            time.sleep(0.5)
            continue
        if p.returncode != 0 or "error" in j:
            sys.exit("iperf3 through %s: %s" % (ns, j.get("error", p.returncode)))
        r = j["end"]["sum_received"]
        return r["bytes"], r["seconds"]
    sys.exit("iperf3 through %s: the server stayed busy" % ns)

DIRS = ("ns→server", "server→ns")
bulks = {(name, d): [] for name, *_ in paths for d in DIRS}  # (bytes, seconds, cpu ns) per round

protos = ("TCP", "UDP") + (("conn",) if conns else ()) + (DIRS if bulk else ())
acc = {(name, proto): [0.0, 0, 0] for name, *_ in paths for proto in protos}
order = list(paths)
for r in range(rounds):
    random.shuffle(order)
    for proto in protos:
        for name, ns, pid, host, port in order:
            if proto in DIRS:
                if name.startswith("floor"):
                    continue
                i = next(j for j, p in enumerate(paths) if p[0] == name)
                c0 = cpu(pid)
                b, secs = iperf(ns, host, 5201 + i, proto == "server→ns")
                bulks[(name, proto)].append((b, secs, cpu(pid) - c0))
                continue
            if proto == "conn":
                if name.startswith("floor"):
                    continue
                dt, dc = turn(ns, pid, host, int(port))
                n = par * conns
            else:
                c0, t0 = cpu(pid), time.perf_counter()
                run(socks[name][proto], k)
                t1, c1 = time.perf_counter(), cpu(pid)
                dt, dc, n = t1 - t0, c1 - c0, k
            a = acc[(name, proto)]
            a[0] += dt
            a[1] += dc
            a[2] += n

peers = [n for n, *_ in paths if n in ("slirp4netns", "pasta")]
print("%d exchanges of 1 byte per path and protocol, %d at a time, paths interleaved in a random order each round; MTU %s." % (rounds * k, k, mtu))
print()
print("| path | TCP RR µs | TCP CPU µs/exchange | UDP RR µs | UDP CPU µs/exchange | TCP RR ÷ best peer | TCP CPU ÷ best peer | UDP RR ÷ best peer | UDP CPU ÷ best peer |")
print("|---|---|---|---|---|---|---|---|---|")
def per(name, proto):
    t, c, n = acc[(name, proto)]
    return t / n * 1e6, c / n / 1e3
for name, *_ in paths:
    row = [name]
    for proto in ("TCP", "UDP"):
        row += ["%.1f" % v for v in per(name, proto)]
    for proto in ("TCP", "UDP"):
        if peers:
            rr, c = per(name, proto)
            brr = min(per(p, proto)[0] for p in peers)
            bc = min(per(p, proto)[1] for p in peers)
            row += ["%.2f" % (rr / brr), "%.2f" % (c / bc)]
        else:
            row += ["-", "-"]
    print("| " + " | ".join(row) + " |")
if conns:
    print()
    print("%d connections per path (connect, 1 byte each way, close), %d per turn from %d thread(s), interleaved the same way." % (rounds * par * conns, par * conns, par))
    print()
    print("| path | µs per connection | CPU µs per connection | time ÷ best peer | CPU ÷ best peer |")
    print("|---|---|---|---|---|")
    for name, *_ in paths:
        if name.startswith("floor"):
            continue
        t, c = per(name, "conn")
        row = [name, "%.1f" % t, "%.1f" % c]
        if peers:
            row += ["%.2f" % (t / min(per(p, "conn")[0] for p in peers)),
                    "%.2f" % (c / min(per(p, "conn")[1] for p in peers))]
        else:
            row += ["-", "-"]
        print("| " + " | ".join(row) + " |")
if bulk:
    tput = [n for n, *_ in paths if not n.startswith("floor")]
    first = tput[0]
    print()
    print("%d iperf3 tests of %d s, %d stream(s), per path and direction, interleaved the same way; medians over the rounds." % (rounds, bulk, streams))
    print()
    head = ["path"]
    for d in DIRS:
        head += ["%s Gbit/s" % d, "%s CPU s/GB" % d, "%s ÷ %s" % (d, first)]
        if peers:
            head += ["%s ÷ best peer" % d]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    def gbps(x):
        return x[0] * 8 / x[1] / 1e9
    for name in tput:
        row = [name]
        for d in DIRS:
            runs = bulks[(name, d)]
            row.append("%.2f" % statistics.median(gbps(x) for x in runs))
            row.append("%.2f" % (sum(x[2] for x in runs) / 1e9 / (sum(x[0] for x in runs) / 1e9)))
            row.append("%.2f" % statistics.median(gbps(x) / gbps(y) for x, y in zip(runs, bulks[(first, d)])))
            if peers:
                best = max(statistics.median(gbps(x) for x in bulks[(p, d)]) for p in peers)
                row.append("%.2f" % (statistics.median(gbps(x) for x in runs) / best))
        print("| " + " | ".join(row) + " |")
floors = [n for n, *_ in paths if n.startswith("floor")]
if len(floors) == 2:
    print()
    c, g = floors
    print("floor relay, Go ÷ C: TCP RR %.2f, CPU %.2f; UDP RR %.2f, CPU %.2f" % tuple(
        per(g, proto)[i] / per(c, proto)[i] for proto in ("TCP", "UDP") for i in (0, 1)))
PY
