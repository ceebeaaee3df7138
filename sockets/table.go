package sockets

import (
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/tapstack/tapstack/stack"
)

// table is the bounded socket table of one stack: every open socket holds
// one slot, numbered like a file descriptor (lowest free number from 3),
// from New or Accept until Close.
type table struct {
	limit int
	sites bool // record where each socket was made

	mu     sync.Mutex
	slots  map[int]*Socket // protected by mu; nil value = reserved
	closed bool            // protected by mu
}

// tableKey is the key of a stack's table in stack.Value.
type tableKey struct{}

// tableOf returns the table of st, creating it on first use. The stack's
// Close closes every socket in it, and a slot reserved before that is
// refused when it would be filled.
func tableOf(st *stack.Stack) *table {
	made := false
	t := st.Value(tableKey{}, func() any {
		made = true
		return &table{limit: st.MaxSockets(), sites: st.SocketSites(), slots: make(map[int]*Socket)}
	}).(*table)
	if made {
		st.OnClose(t.closeAll)
	}
	return t
}

// reserve takes the lowest free slot, or fails with EMFILE.
func (t *table) reserve() (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return 0, errStackClosed
	}
	if len(t.slots) >= t.limit {
		msg := fmt.Sprintf("too many open sockets: the socket table holds %d and %d are in use; close sockets you are done with", t.limit, len(t.slots))
		if t.sites {
			msg += "; most were made at " + t.topSites(3)
		}
		return 0, errnoErr(syscall.EMFILE, msg)
	}
	for fd := 3; ; fd++ {
		if _, used := t.slots[fd]; !used {
			t.slots[fd] = nil
			return fd, nil
		}
	}
}

// fill puts s in the slot fd reserved. It returns false, and frees the
// slot, if the table was closed in between: the caller must then close
// s's endpoint.
func (t *table) fill(fd int, s *Socket) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		delete(t.slots, fd)
		return false
	}
	t.slots[fd] = s
	return true
}

// topSites names the n places that made the most open sockets, with
// their counts; t.mu is held.
func (t *table) topSites(n int) string {
	count := map[string]int{}
	for _, s := range t.slots {
		if s != nil {
			count[s.site.String()]++
		}
	}
	sites := make([]string, 0, len(count))
	for k := range count {
		sites = append(sites, k)
	}
	sort.Slice(sites, func(i, j int) bool {
		if count[sites[i]] != count[sites[j]] {
			return count[sites[i]] > count[sites[j]]
		}
		return sites[i] < sites[j]
	})
	var b strings.Builder
	for i, k := range sites[:min(n, len(sites))] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s (%d)", k, count[k])
	}
	return b.String()
}

// site is where a socket was made: the stack of its maker, from the
// first frame outside this package.
type site struct {
	pcs []uintptr
}

// maxSiteFrames is how many frames of a maker's stack a site keeps.
const maxSiteFrames = 8

// thisPackage prefixes the functions of this package in a stack.
const thisPackage = "github.com/tapstack/tapstack/sockets."

// callerSite records the stack of the socket's maker; frames resolves it
// past this package's own.
func callerSite() site {
	var pcs [32]uintptr
	n := runtime.Callers(3, pcs[:])
	return site{pcs: append([]uintptr(nil), pcs[:n]...)}
}

// frames resolves the site's stack from the first frame outside this
// package, at most maxSiteFrames of them.
func (s site) frames() []runtime.Frame {
	if len(s.pcs) == 0 {
		return nil
	}
	var out []runtime.Frame
	fs := runtime.CallersFrames(s.pcs)
	for len(out) < maxSiteFrames {
		f, more := fs.Next()
		if len(out) > 0 || !strings.HasPrefix(f.Function, thisPackage) {
			out = append(out, f)
		}
		if !more {
			break
		}
	}
	return out
}

// String is the maker's file:line ("" if not recorded).
func (s site) String() string {
	fs := s.frames()
	if len(fs) == 0 {
		return ""
	}
	return fmt.Sprintf("%s:%d", fs[0].File, fs[0].Line)
}

// stack is the maker's short stack, one "function file:line" per frame.
func (s site) stack() []string {
	var out []string
	for _, f := range s.frames() {
		out = append(out, fmt.Sprintf("%s %s:%d", f.Function, f.File, f.Line))
	}
	return out
}

func (t *table) release(fd int) {
	t.mu.Lock()
	delete(t.slots, fd)
	t.mu.Unlock()
}

func (t *table) closeAll() {
	t.mu.Lock()
	t.closed = true
	var all []*Socket
	for _, s := range t.slots {
		if s != nil {
			all = append(all, s)
		}
	}
	t.mu.Unlock()
	for _, s := range all {
		_ = s.Close()
	}
}

// SocketInfo is one row of a stack's socket table.
type SocketInfo struct {
	FD     int
	Family Family
	Type   Type
	Local  Addr
	Peer   Addr // zero when not connected
	State  string
	Age    time.Duration
	// Site is where the socket was made (file:line of the first caller
	// outside package sockets) and Stack that caller's short stack, when
	// the stack records them (stack.Config.SocketSites).
	Site  string   `json:",omitempty"`
	Stack []string `json:",omitempty"`
}

// TableInfo describes a stack's socket table.
type TableInfo struct {
	Limit   int
	InUse   int
	Sockets []SocketInfo // by FD
}

// Table lists the sockets open on st, for tools.
func Table(st *stack.Stack) TableInfo {
	t := tableOf(st)
	t.mu.Lock()
	info := TableInfo{Limit: t.limit, InUse: len(t.slots)}
	var all []*Socket
	for _, s := range t.slots {
		if s != nil {
			all = append(all, s)
		}
	}
	t.mu.Unlock()
	now := time.Now()
	for _, s := range all {
		si := SocketInfo{FD: s.fd, Family: s.family, Type: s.typ, State: s.state(), Age: now.Sub(s.created), Site: s.site.String(), Stack: s.site.stack()}
		si.Local, _ = s.localAddr()
		si.Peer, _ = s.peerAddr()
		info.Sockets = append(info.Sockets, si)
	}
	sort.Slice(info.Sockets, func(i, j int) bool { return info.Sockets[i].FD < info.Sockets[j].FD })
	return info
}
