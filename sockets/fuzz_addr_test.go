package sockets

import (
	"testing"

	"github.com/tapstack/tapstack/stack"
)

// FuzzParseAddr feeds host strings and ports from outside (a program's
// arguments, a config file) to the address parser of every family and
// use: it must return an address or an error, never panic, and an
// accepted address must say what it is.
func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"0.0.0.0", "127.0.0.1", "255.255.255.255", "::", "::1", "fe80::1%eth0", "fe80::1%1",
		"fe80::1%", "::ffff:10.0.0.1", "10.0.9.1", "example.com", "", "1.2.3.4.5", "[::1]", "fd09::1%99999999999", "%", "0x7f.1"} {
		f.Add(s, 80)
	}
	f.Add("10.0.9.1", -1)
	f.Add("10.0.9.1", 65536)
	st, err := stack.New(stack.Config{})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(st.Close)
	f.Fuzz(func(t *testing.T, host string, port int) {
		a := Addr{Host: host, Port: port}
		_ = a.String()
		_, _ = a.IP()
		_, _ = a.AddrPort()
		for _, fam := range []Family{AF_INET, AF_INET6, AF_UNSPEC, 77} {
			for _, use := range []addrUse{useBind, useRemote} {
				fa, err := parseAddr(st, fam, a, use)
				if err == nil && (port < 0 || port > 65535) {
					t.Fatalf("parseAddr(%v, %q:%d) accepted port %d as %v", fam, host, port, port, fa)
				}
			}
		}
	})
}
