package slirpapi

import (
	"errors"
	"net"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/tapstack/tapstack/relay"
)

type fakeGateway struct{ specs map[string]bool }

func (f *fakeGateway) AddForward(fw relay.Forward) error {
	if f.specs[fw.String()] {
		return errors.New("exists")
	}
	f.specs[fw.String()] = true
	return nil
}

func (f *fakeGateway) RemoveForward(spec string) error {
	if !f.specs[spec] {
		return errors.New("no such forward")
	}
	delete(f.specs, spec)
	return nil
}

// TestAnswersAsSlirp4netns: each request and its answer, byte for byte as
// slirp4netns 1.2 writes them.
func TestAnswersAsSlirp4netns(t *testing.T) {
	g := &fakeGateway{specs: map[string]bool{}}
	s := &Server{fwd: g, guest: netip.MustParseAddr("10.0.2.100"), nextID: 1, byID: map[int]hostfwd{}}
	for _, c := range []struct{ req, want string }{
		{`{"execute": "list_hostfwd"}`, `{"entries":[]}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "0.0.0.0", "host_port": 8080, "guest_addr": "10.0.2.100", "guest_port": 80}}`, `{"return":{"id":1}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "udp", "host_port": 5353, "guest_port": 53}}`, `{"return":{"id":2}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8080, "guest_port": 80}}`, `{"error":{"desc":"bad request: add_hostfwd: slirp_add_hostfwd failed"}}`},
		{`{"execute": "list_hostfwd"}`, `{"entries":[{"id":1,"proto":"tcp","host_addr":"0.0.0.0","host_port":8080,"guest_addr":"10.0.2.100","guest_port":80},{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"10.0.2.100","guest_port":53}]}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "sctp", "host_port": 1, "guest_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.proto"}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_addr": "nope", "host_port": 1, "guest_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_addr"}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "guest_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 70000, "guest_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.host_port"}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1, "guest_addr": "x", "guest_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_addr"}}`},
		{`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 1}}`, `{"error":{"desc":"bad request: add_hostfwd: bad arguments.guest_port"}}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 42}}`, `{"error":{"desc":"bad request: remove_hostfwd: bad arguments.id"}}`},
		{`{"execute": "remove_hostfwd", "arguments": {"id": 1}}`, `{"return":{}}`},
		{`{"execute": "list_hostfwd"}`, `{"entries":[{"id":2,"proto":"udp","host_addr":"0.0.0.0","host_port":5353,"guest_addr":"10.0.2.100","guest_port":53}]}`},
		{`not json`, `{"error":{"desc":"bad request: cannot parse JSON"}}`},
		{`[1,2]`, `{"error":{"desc":"bad request: json_object() failed"}}`},
		{`{"arguments": {}}`, `{"error":{"desc":"bad request: no execute found"}}`},
		{`{"execute": "reboot"}`, `{"error":{"desc":"bad request: unknown execute"}}`},
	} {
		if got := string(s.Handle([]byte(c.req))); got != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.req, got, c.want)
		}
	}
	if len(g.specs) != 1 || !g.specs["0.0.0.0:5353:53/udp"] {
		t.Errorf("the gateway holds %v", g.specs)
	}
}

// TestOneRequestPerConnection: the socket answers a request, closes, and
// Close removes the forwards added through it.
func TestOneRequestPerConnection(t *testing.T) {
	g := &fakeGateway{specs: map[string]bool{}}
	path := filepath.Join(t.TempDir(), "api.sock")
	s, err := Listen(path, g, netip.MustParseAddr("10.0.2.100"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(`{"execute": "add_hostfwd", "arguments": {"proto": "tcp", "host_port": 8080, "guest_port": 80}}`))
	buf := make([]byte, 200)
	n, _ := c.Read(buf)
	if string(buf[:n]) != `{"return":{"id":1}}` {
		t.Fatalf("answer %q", buf[:n])
	}
	if n, err := c.Read(buf); n != 0 || err == nil {
		t.Fatalf("the connection stays open after the answer: %d %v", n, err)
	}
	c.Close()
	s.Close()
	if len(g.specs) != 0 {
		t.Fatalf("forwards left after Close: %v", g.specs)
	}
}
