package relayed

import (
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/tests/nstest"
)

// TestFlowListShowsRelayedConnections: a connection the namespace holds
// open through the relay is in the relay's flow list (tapstack ss), with
// both ends and its bytes each way, on either engine; once closed it is
// gone.
func TestFlowListShowsRelayedConnections(t *testing.T) {
	engines(t, func(t *testing.T, cfg daemon.Config) {
		env := nstest.NewRelayed(t, cfg)
		addr := net.JoinHostPort(nstest.OuterV4, "9300")
		serveTCP(t, addr, func(c net.Conn) {
			buf := make([]byte, 5)
			if _, err := io.ReadFull(c, buf); err == nil {
				c.Write([]byte("hello, namespace"))
			}
			io.Copy(io.Discard, c)
		})
		c, err := dialInside(env, "tcp4", addr, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.Write([]byte("hello"))
		got := make([]byte, 16)
		if _, err := io.ReadFull(c, got); err != nil {
			t.Fatal(err)
		}
		ns := c.LocalAddr().String()
		var seen bool
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !seen; time.Sleep(20 * time.Millisecond) {
			for _, f := range env.Daemon.Relay().FlowList() {
				// The flow engine describes its state of the flow
				// (tapstack ss -i): all 16 bytes sent, no more.
				engineOK := (cfg.Relay.Engine == relay.EngineFlow) == strings.Contains(f.Engine, "snd_una:17 snd_nxt:17 ")
				if f.NS == ns && f.Dst == addr && f.Proto == "tcp" && f.Kind == "relay" && f.Up == 5 && f.Down == 16 &&
					f.State == "established" && strings.HasPrefix(f.Local, nstest.OuterV4+":") && engineOK {
					seen = true
				}
			}
		}
		if !seen {
			t.Fatalf("the flow list %+v has no established flow %s → %s with 5 bytes up and 16 down", env.Daemon.Relay().FlowList(), ns, addr)
		}
		c.Close()
		for deadline := time.Now().Add(5 * time.Second); env.Daemon.Relay().FlowCount() > 0; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("after the close, the flow list still has %+v", env.Daemon.Relay().FlowList())
			}
		}
		checkEngine(t, env, cfg)
	})
}
