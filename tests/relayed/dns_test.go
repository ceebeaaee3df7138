package relayed

import (
	"encoding/binary"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/tests/nstest"
)

// queryA asks server:53 for the A records of name over proto ("udp" or
// "tcp") from a socket in env's namespace, and tells what came back as
// "udp 10.0.2.50 rcode=0" ("none" for no address), or why nothing did.
func queryA(env *nstest.Relayed, server, name, proto string) string {
	id := uint16(rand.N(1 << 16))
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.StartQuestions()
	b.Question(dnsmessage.Question{Name: dnsmessage.MustNewName(name + "."), Type: dnsmessage.TypeA, Class: dnsmessage.ClassINET})
	q, err := b.Finish()
	if err != nil {
		return err.Error()
	}
	dst := netip.AddrPortFrom(netip.MustParseAddr(server), 53)
	var r []byte
	if proto == "tcp" {
		c, err := dialInside(env, "tcp4", dst.String(), 5*time.Second)
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return err.Error()
		}
		var n [2]byte
		if _, err := io.ReadFull(c, n[:]); err != nil {
			return err.Error()
		}
		r = make([]byte, binary.BigEndian.Uint16(n[:]))
		if _, err := io.ReadFull(c, r); err != nil {
			return err.Error()
		}
	} else {
		// An unconnected socket, as a resolver's: an answer from any
		// address is read.
		var c *net.UDPConn
		if err := env.NS.Do(func() (err error) {
			c, err = net.ListenUDP("udp4", nil)
			return err
		}); err != nil {
			return err.Error()
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.WriteToUDPAddrPort(q, dst); err != nil {
			return err.Error()
		}
		r = make([]byte, 4096)
		n, _, err := c.ReadFromUDPAddrPort(r)
		if err != nil {
			return err.Error()
		}
		r = r[:n]
	}
	var p dnsmessage.Parser
	h, err := p.Start(r)
	if err != nil {
		return err.Error()
	}
	if h.ID != id {
		return fmt.Sprintf("answer id %d, want %d", h.ID, id)
	}
	if err := p.SkipAllQuestions(); err != nil {
		return err.Error()
	}
	var addrs []string
	for {
		rh, err := p.AnswerHeader()
		if err == dnsmessage.ErrSectionDone {
			break
		}
		if err != nil {
			return err.Error()
		}
		if rh.Type != dnsmessage.TypeA {
			p.SkipAnswer()
			continue
		}
		a, err := p.AResource()
		if err != nil {
			return err.Error()
		}
		addrs = append(addrs, netip.AddrFrom4(a.A).String())
	}
	if addrs == nil {
		addrs = []string{"none"}
	}
	return fmt.Sprintf("%s %s rcode=%d", proto, strings.Join(addrs, " "), h.RCode)
}

// TestDNSForwarderUDPTCPAndResolvConfChanges: the DNS forwarder answers
// over UDP and TCP from the upstream its resolv.conf names, and follows
// the file when it changes: a query sent while it names a server that is
// not there goes unanswered, the next one after the change is answered.
func TestDNSForwarderUDPTCPAndResolvConfChanges(t *testing.T) {
	startDNSMasq(t)
	// The daemon's resolv.conf first names a server that is not there.
	resolv := filepath.Join(t.TempDir(), "resolv.conf")
	os.WriteFile(resolv, []byte("nameserver 198.51.100.9\n"), 0o644)
	env := nstest.NewRelayed(t, daemon.Config{Relay: relay.Config{ResolvConf: resolv}})
	if got := queryA(env, "10.0.2.3", "name.test", "udp"); strings.HasPrefix(got, "udp 10.0.2.50") {
		t.Fatalf("answered although the upstream is absent: %q", got)
	}
	// The file changes: the next query follows it.
	time.Sleep(10 * time.Millisecond)
	os.WriteFile(resolv, []byte("# changed\nnameserver "+nstest.OuterV4+"\n"), 0o644)
	if got := queryA(env, "10.0.2.3", "name.test", "udp"); got != "udp 10.0.2.50 rcode=0" {
		t.Fatalf("over UDP after the change: %q", got)
	}
	if got := queryA(env, "10.0.2.3", "name.test", "tcp"); got != "tcp 10.0.2.50 rcode=0" {
		t.Fatalf("over TCP: %q", got)
	}
}
