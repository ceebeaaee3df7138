package sockets

import (
	"fmt"
	"sort"
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
		return &table{limit: st.MaxSockets(), slots: make(map[int]*Socket)}
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
		return 0, errnoErr(syscall.EMFILE, fmt.Sprintf("too many open sockets: the socket table holds %d and %d are in use; close sockets you are done with", t.limit, len(t.slots)))
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
		si := SocketInfo{FD: s.fd, Family: s.family, Type: s.typ, State: s.state(), Age: now.Sub(s.created)}
		si.Local, _ = s.localAddr()
		si.Peer, _ = s.peerAddr()
		info.Sockets = append(info.Sockets, si)
	}
	sort.Slice(info.Sockets, func(i, j int) bool { return info.Sockets[i].FD < info.Sockets[j].FD })
	return info
}
