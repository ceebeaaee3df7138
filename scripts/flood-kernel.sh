#!/usr/bin/env bash
# The kernel's figure for the SYN-flood test (tests/limits_test.go,
# TestSYNFloodWithSpoofedSources): two namespaces joined by a veth pair,
# a listener in one, hping3 --flood --rand-source from the other at two
# ports for DURATION seconds (10), and 100 legitimate connections to each
# port meanwhile, counted as they complete within 3 s. Needs root, hping3
# and python3. Everything it makes is removed on exit.
set -euo pipefail
DUR=${1:-10}
A=tsfka$$ B=tsfkb$$
cleanup() { [ -n "${SRV:-}" ] && kill "$SRV" 2>/dev/null; ip netns del $A 2>/dev/null; ip netns del $B 2>/dev/null; true; }
trap cleanup EXIT
ip netns add $A; ip netns add $B
ip -n $A link add v0 type veth peer name v1 netns $B
ip -n $A addr add 10.77.0.100/24 dev v0; ip -n $B addr add 10.77.0.2/24 dev v1
for n in $A $B; do ip -n $n link set lo up; done
ip -n $A link set v0 up; ip -n $B link set v1 up
ip netns exec $B python3 -c '
import socket, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("10.77.0.2", port)); s.listen(1024)
    while True:
        c, a = s.accept()
        threading.Thread(target=answer, args=(c,)).start()
def answer(c):
    try:
        while c.recv(4096): pass
        c.sendall(b"live")
    except OSError: pass
    c.close()
threading.Thread(target=serve, args=(7,), daemon=True).start()
serve(8000)' & SRV=$!
sleep 1
CLIENT='
import socket, sys, threading, time
host, port = sys.argv[1], int(sys.argv[2])
ok = 0; worst = 0.0; lock = threading.Lock()
def worker(k):
    global ok, worst
    for i in range(k, 100, 4):
        t = time.time()
        try:
            s = socket.create_connection((host, port), timeout=8)
            s.sendall(b"GET / HTTP/1.0\r\n\r\n"); s.shutdown(socket.SHUT_WR)
            while s.recv(4096): pass
            s.close(); dt = time.time() - t
            with lock:
                worst = max(worst, dt)
                if dt <= 3: ok += 1
        except OSError: pass
ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
print("port %d: %d of 100 within 3 s, slowest %.3f s" % (port, ok, worst))'
for p in 7 8000; do timeout "$DUR" ip netns exec $A hping3 -q -S --flood --rand-source -p $p 10.77.0.2 >/dev/null 2>&1 & done
sleep 1
ip netns exec $A python3 -c "$CLIENT" 10.77.0.2 7 & C7=$!
ip netns exec $A python3 -c "$CLIENT" 10.77.0.2 8000
wait $C7
