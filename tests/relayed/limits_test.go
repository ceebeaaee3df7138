package relayed

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/tests/nstest"
)

// TestMaxFlowsRefusesTheNextConnection: with MaxFlows 2 (--max-flows),
// a third relayed connection from the namespace's kernel is refused (a
// RST: ECONNREFUSED) and counted; once one of the two ends, a new one
// gets in; and when all are closed no flow is left. On either engine.
func TestMaxFlowsRefusesTheNextConnection(t *testing.T) {
	engines(t, func(t *testing.T, cfg daemon.Config) {
		cfg.Relay.MaxFlows = 2
		env := nstest.NewRelayed(t, cfg)
		addr := net.JoinHostPort(nstest.OuterV4, "9500")
		serveTCP(t, addr, func(c net.Conn) { io.Copy(c, c) })
		dial := func() (net.Conn, error) { return dialInside(env, "tcp4", addr, 10*time.Second) }
		var open []net.Conn
		defer func() {
			for _, c := range open {
				c.Close()
			}
		}()
		for i := 0; i < 2; i++ {
			c, err := dial()
			if err != nil {
				t.Fatalf("connection %d of 2: %v", i, err)
			}
			open = append(open, c)
		}
		if c, err := dial(); !errors.Is(err, syscall.ECONNREFUSED) {
			if c != nil {
				c.Close()
			}
			t.Fatalf("a third connection at --max-flows 2: %v, want ECONNREFUSED", err)
		}
		if c := counters(env); c["dropped_busy"] == 0 {
			t.Fatalf("counters %v: the refusal was not counted", c)
		}
		open[0].Close()
		open = open[1:]
		var c net.Conn
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			var err error
			if c, err = dial(); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no new connection within 5 s of one ending: %v", err)
			}
		}
		open = append(open, c)
		c.Write([]byte("still relayed"))
		got := make([]byte, 13)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "still relayed" {
			t.Fatalf("the connection let in after one ended: %q %v", got, err)
		}
		for _, c := range open {
			c.Close()
		}
		open = nil
		for deadline := time.Now().Add(5 * time.Second); env.Daemon.Relay().FlowCount() > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("5 s after every connection closed, the relay holds %+v", env.Daemon.Relay().FlowList())
			}
		}
		checkEngine(t, env, cfg)
	})
}
