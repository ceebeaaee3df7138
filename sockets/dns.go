package sockets

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/tapstack/tapstack/stack"
)

// lookupDNS resolves name over the stack. It returns the canonical name,
// the addresses, or a getaddrinfo code and a detail.
func lookupDNS(ctx context.Context, st *stack.Stack, r *ResolverConfig, name string, family Family) (string, []netip.Addr, GAIErrno, string) {
	if len(r.Servers) == 0 {
		return "", nil, EAI_NONAME, "no DNS servers are configured for this stack (SetResolver) and the name is not in its hosts table"
	}
	var lastCode GAIErrno = EAI_NONAME
	lastDetail := ""
	for _, cand := range searchList(name, r.Search) {
		fqdn, err := dnsmessage.NewName(cand)
		if err != nil {
			return "", nil, EAI_NONAME, fmt.Sprintf("not a valid DNS name: %v", err)
		}
		var qtypes []dnsmessage.Type
		switch family {
		case AF_INET:
			qtypes = []dnsmessage.Type{dnsmessage.TypeA}
		case AF_INET6:
			qtypes = []dnsmessage.Type{dnsmessage.TypeAAAA}
		default:
			qtypes = []dnsmessage.Type{dnsmessage.TypeAAAA, dnsmessage.TypeA}
		}
		canon := cand
		var addrs []netip.Addr
		nx := false
		var failCode GAIErrno
		for _, qt := range qtypes {
			c, a, rcode, err := query(ctx, st, r, fqdn, qt)
			if err != nil {
				failCode, lastDetail = EAI_AGAIN, err.Error()
				continue
			}
			switch rcode {
			case dnsmessage.RCodeSuccess:
				if c != "" {
					canon = c
				}
				addrs = append(addrs, a...)
			case dnsmessage.RCodeNameError:
				nx = true
			default:
				failCode, lastDetail = EAI_AGAIN, "server answered "+rcode.String()
			}
		}
		if len(addrs) > 0 {
			return canon, addrs, 0, ""
		}
		switch {
		case failCode != 0:
			lastCode = failCode
		case nx:
			lastCode, lastDetail = EAI_NONAME, "NXDOMAIN"
		default:
			lastCode, lastDetail = EAI_NONAME, "the name has no address of the family asked for"
		}
	}
	return "", nil, lastCode, lastDetail
}

// searchList is the names to try for name, in order.
func searchList(name string, search []string) []string {
	if strings.HasSuffix(name, ".") || len(search) == 0 {
		return []string{dot(name)}
	}
	var out []string
	if strings.Contains(name, ".") {
		out = append(out, dot(name))
	}
	for _, s := range search {
		out = append(out, dot(name+"."+strings.Trim(s, ".")))
	}
	if !strings.Contains(name, ".") {
		out = append(out, dot(name))
	}
	return out
}

func dot(n string) string {
	if strings.HasSuffix(n, ".") {
		return n
	}
	return n + "."
}

// errServerFailed marks a server that did not answer usefully; the next
// one is tried.
var errServerFailed = errors.New("no usable answer")

// query asks the servers in turn, Attempts rounds, for one name and type.
func query(ctx context.Context, st *stack.Stack, r *ResolverConfig, name dnsmessage.Name, qt dnsmessage.Type) (string, []netip.Addr, dnsmessage.RCode, error) {
	var lastErr error
	for round := 0; round < r.Attempts; round++ {
		for _, srv := range r.Servers {
			if err := ctx.Err(); err != nil {
				return "", nil, 0, err
			}
			msg, id, err := buildQuery(name, qt)
			if err != nil {
				return "", nil, 0, err
			}
			resp, err := exchangeUDP(ctx, st, srv, msg, id, name, qt, r.Timeout)
			if err == nil && resp.Header.Truncated {
				resp, err = exchangeTCP(ctx, st, srv, msg, id, name, qt, r.Timeout)
			}
			if err != nil {
				lastErr = fmt.Errorf("%v: %w", srv, err)
				continue
			}
			if resp.Header.RCode == dnsmessage.RCodeServerFailure || resp.Header.RCode == dnsmessage.RCodeRefused {
				lastErr = fmt.Errorf("%v: %s", srv, resp.Header.RCode)
				continue
			}
			canon, addrs := answers(resp, name, qt)
			return canon, addrs, resp.Header.RCode, nil
		}
	}
	if lastErr == nil {
		lastErr = errServerFailed
	}
	return "", nil, 0, fmt.Errorf("no DNS server answered: %w", lastErr)
}

func buildQuery(name dnsmessage.Name, qt dnsmessage.Type) ([]byte, uint16, error) {
	var idb [2]byte
	_, _ = rand.Read(idb[:])
	id := binary.BigEndian.Uint16(idb[:])
	b := dnsmessage.NewBuilder(nil, dnsmessage.Header{ID: id, RecursionDesired: true})
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, 0, err
	}
	if err := b.Question(dnsmessage.Question{Name: name, Type: qt, Class: dnsmessage.ClassINET}); err != nil {
		return nil, 0, err
	}
	msg, err := b.Finish()
	return msg, id, err
}

// checkResponse parses a reply and checks that it answers our question.
func checkResponse(b []byte, id uint16, name dnsmessage.Name, qt dnsmessage.Type) (*dnsmessage.Message, error) {
	var m dnsmessage.Message
	if err := m.Unpack(b); err != nil {
		if len(b) >= 12 && binary.BigEndian.Uint16(b) == id && b[2]&0x02 != 0 {
			// Truncated and cut mid-record: the header is enough.
			var h dnsmessage.Parser
			hdr, herr := h.Start(b)
			if herr == nil {
				return &dnsmessage.Message{Header: hdr}, nil
			}
		}
		return nil, err
	}
	if m.Header.ID != id || !m.Header.Response {
		return nil, errors.New("reply to another query")
	}
	if len(m.Questions) != 1 || !strings.EqualFold(m.Questions[0].Name.String(), name.String()) || m.Questions[0].Type != qt {
		return nil, errors.New("reply to another question")
	}
	return &m, nil
}

func serverFamily(a netip.Addr) Family {
	if a.Is4() || a.Is4In6() {
		return AF_INET
	}
	return AF_INET6
}

func sockAddr(ap netip.AddrPort) Addr {
	return Addr{Host: ap.Addr().Unmap().WithZone("").String(), Port: int(ap.Port())}
}

// exchangeUDP sends the query from a fresh socket (a random source port)
// and waits for the matching reply.
func exchangeUDP(ctx context.Context, st *stack.Stack, srv netip.AddrPort, msg []byte, id uint16, name dnsmessage.Name, qt dnsmessage.Type, timeout time.Duration) (*dnsmessage.Message, error) {
	s, err := New(st, serverFamily(srv.Addr()), SOCK_DGRAM, 0)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	if err := s.Connect(sockAddr(srv)); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(timeout)
	if _, err := s.Send(msg, 0); err != nil {
		return nil, err
	}
	buf := make([]byte, 65535)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			return nil, errTimedOut
		}
		s.SetTimeout(left)
		n, err := s.RecvInto(buf, 0)
		if err != nil {
			return nil, err
		}
		m, err := checkResponse(buf[:n], id, name, qt)
		if err != nil {
			continue // not ours: keep waiting
		}
		return m, nil
	}
}

// exchangeTCP asks again over TCP, for replies too large for UDP.
func exchangeTCP(ctx context.Context, st *stack.Stack, srv netip.AddrPort, msg []byte, id uint16, name dnsmessage.Name, qt dnsmessage.Type, timeout time.Duration) (*dnsmessage.Message, error) {
	s, err := New(st, serverFamily(srv.Addr()), SOCK_STREAM, 0)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Close() })
	defer stop()
	deadline := time.Now().Add(timeout)
	_ = s.SetDeadline(deadline)
	if err := s.Connect(sockAddr(srv)); err != nil {
		return nil, err
	}
	framed := make([]byte, 2+len(msg))
	binary.BigEndian.PutUint16(framed, uint16(len(msg)))
	copy(framed[2:], msg)
	if _, err := s.SendAll(framed, 0); err != nil {
		return nil, err
	}
	var lenb [2]byte
	if _, err := s.RecvInto(lenb[:], MSG_WAITALL); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(lenb[:]))
	buf := make([]byte, n)
	got, err := s.RecvInto(buf, MSG_WAITALL)
	if err != nil {
		return nil, err
	}
	if got != n {
		return nil, errors.New("short reply over TCP")
	}
	return checkResponse(buf, id, name, qt)
}

// answers follows the CNAME chain from name and collects the addresses of
// type qt at its end.
func answers(m *dnsmessage.Message, name dnsmessage.Name, qt dnsmessage.Type) (string, []netip.Addr) {
	cur := strings.ToLower(name.String())
	for i := 0; i < 16; i++ {
		moved := false
		for _, a := range m.Answers {
			if c, ok := a.Body.(*dnsmessage.CNAMEResource); ok && strings.EqualFold(a.Header.Name.String(), cur) {
				cur = strings.ToLower(c.CNAME.String())
				moved = true
			}
		}
		if !moved {
			break
		}
	}
	var out []netip.Addr
	for _, a := range m.Answers {
		if !strings.EqualFold(a.Header.Name.String(), cur) {
			continue
		}
		switch b := a.Body.(type) {
		case *dnsmessage.AResource:
			if qt == dnsmessage.TypeA {
				out = append(out, netip.AddrFrom4(b.A))
			}
		case *dnsmessage.AAAAResource:
			if qt == dnsmessage.TypeAAAA {
				out = append(out, netip.AddrFrom16(b.AAAA))
			}
		}
	}
	return cur, out
}
