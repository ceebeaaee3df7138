package nstest

// EchoClientPy is a python3 script for Env.Python: it connects to
// argv[1]:argv[2] over TCP, sends argv[3] bytes of random data while
// reading the echo back, and prints "sent=<sha256> got=<sha256> n=<bytes>".
const EchoClientPy = `
import hashlib, os, socket, sys, threading
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = os.urandom(size)
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.settimeout(30)
s.connect((host, port))
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
h = hashlib.sha256()
n = 0
while True:
    b = s.recv(65536)
    if not b:
        break
    h.update(b)
    n += len(b)
t.join()
s.close()
print("sent=%s got=%s n=%d" % (hashlib.sha256(data).hexdigest(), h.hexdigest(), n))
`

// UDPEchoClientPy sends argv[3] datagrams of 1000 random bytes to
// argv[1]:argv[2] one at a time and prints "ok N" when every echo came back
// byte-exact.
const UDPEchoClientPy = `
import os, socket, sys
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.settimeout(2)
ok = 0
for i in range(count):
    d = os.urandom(1000)
    for attempt in range(3):
        s.sendto(d, (host, port))
        try:
            b, a = s.recvfrom(2000)
        except socket.timeout:
            continue
        if b == d:
            ok += 1
        break
print("ok %d" % ok)
`
