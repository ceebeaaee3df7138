# Helpers the measurement scripts source: namespaces they own, an outer
# namespace that plays the host, and slirp4netns and pasta serving a
# namespace. The sourcing script keeps NAMESPACES (deleted on its exit)
# and TMP (a directory of its own), and sets MTU and SRV.

# stop_pids PID...: asks each process to stop (SIGINT), gives it 5 s,
# then kills it.
stop_pids() {
	local pid i
	for pid in "$@"; do kill -INT "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for i in $(seq 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

# del_namespaces: deletes the namespaces newns made.
del_namespaces() {
	local ns
	for ns in "${NAMESPACES[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
}

# newns NAME: a namespace with its loopback up, deleted on exit.
newns() {
	ip netns add "$1"
	NAMESPACES+=("$1")
	ip -n "$1" link set lo up
}

# wait_for DESCRIPTION COMMAND...: retries COMMAND for up to 20 s.
wait_for() {
	local what=$1 i
	shift
	for i in $(seq 200); do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 0.1
	done
	echo "${0##*/}: $what not ready in 20 s" >&2
	return 1
}

# outer_host NAME VETH: the "host" namespace: SRV on its loopback, and
# (for pasta, which copies the host's addresses and routes) an interface
# VETH0 with a default route.
outer_host() {
	newns "$1"
	ip -n "$1" addr add "$SRV/32" dev lo
	ip -n "$1" link add "${2}0" mtu "$MTU" type veth peer name "${2}1"
	ip -n "$1" addr add 192.0.2.1/24 dev "${2}0"
	ip -n "$1" link set "${2}0" up
	ip -n "$1" link set "${2}1" up
	ip -n "$1" route add default via 192.0.2.2 dev "${2}0"
}

# start_slirp OUTER NS: slirp4netns with its host side in OUTER and its
# TAP in NS; sets PEER_PID, and fails (saying why) if it is not ready in
# 20 s.
start_slirp() {
	mkfifo "$TMP/slirp.ready"
	ip netns exec "$1" slirp4netns --configure --mtu="$MTU" --disable-host-loopback \
		--ready-fd=3 --netns-type=path "/run/netns/$2" tap0 >"$TMP/slirp.out" 2>&1 3>"$TMP/slirp.ready" &
	PEER_PID=$!
	# slirp4netns writes "1" to its ready fd, without a newline.
	if [ "$(timeout 20 head -c1 "$TMP/slirp.ready")" != 1 ]; then
		cat "$TMP/slirp.out" >&2
		return 1
	fi
}

# start_pasta OUTER NS: pasta run from OUTER joining NS, whose addresses
# and routes it copies from OUTER; sets PEER_PID, and fails (saying why)
# if NS has no default route in 20 s.
start_pasta() {
	ip netns exec "$1" pasta --runas 0:0 --config-net -q -f -m "$MTU" --netns "$2" >"$TMP/pasta.out" 2>&1 &
	PEER_PID=$!
	if ! wait_for pasta sh -c "ip -n '$2' route show default | grep -q ." || ! kill -0 "$PEER_PID" 2>/dev/null; then
		cat "$TMP/pasta.out" >&2
		return 1
	fi
}

# ECHO_SERVER: python3 -c "$ECHO_SERVER" ADDR PORT echoes TCP (with
# TCP_NODELAY) and UDP on ADDR:PORT.
ECHO_SERVER='
import socket, sys, threading
addr, port = sys.argv[1], int(sys.argv[2])
def serve(c):
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with c:
        while True:
            b = c.recv(65536)
            if not b:
                return
            c.sendall(b)
def udp():
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind((addr, port))
    while True:
        b, a = u.recvfrom(65536)
        u.sendto(b, a)
threading.Thread(target=udp, daemon=True).start()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((addr, port))
s.listen(64)
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
'
