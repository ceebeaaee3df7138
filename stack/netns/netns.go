// Package netns is the Linux namespace plumbing of tapstack: it creates or
// opens a named network namespace, moves a link into it, configures the
// kernel side of that link with netlink (addresses, routes, lo up), runs
// code inside it on a locked OS thread, and removes exactly what it made.
//
// It knows nothing of gVisor. Start at Create and Namespace.Configure.
package netns

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// Dir is where named namespaces live, as iproute2 keeps them.
const Dir = "/var/run/netns"

// Namespace is a network namespace held open by a file descriptor.
type Namespace struct {
	// Name is the iproute2 name, empty for a namespace opened by path or PID.
	Name string
	// Created tells whether this process created it (Close deletes it then).
	Created bool

	handle netns.NsHandle
	path   string // the file it was opened by, if any
}

// ErrNotPermitted is wrapped when the caller lacks CAP_SYS_ADMIN/NET_ADMIN.
var ErrNotPermitted = errors.New("creating or entering a network namespace needs root (CAP_SYS_ADMIN) or a user namespace")

// ValidName reports whether name is usable as a namespace name.
func ValidName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\x00") || len(name) > 200 {
		return fmt.Errorf("invalid namespace name %q", name)
	}
	return nil
}

// Exists reports whether a named namespace exists.
func Exists(name string) bool {
	_, err := os.Stat(filepath.Join(Dir, name))
	return err == nil
}

// Create makes a new named network namespace. It fails if the name is taken.
func Create(name string) (*Namespace, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	if Exists(name) {
		return nil, fmt.Errorf("create netns %s: %w", name, os.ErrExist)
	}
	var h netns.NsHandle
	// NewNamed moves the thread into the new namespace (and leaves it
	// there if it fails half-way); onThread brings it back.
	err := onThread(func() (err error) {
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil && h.IsOpen() {
		// Made, but the thread could not come back: undo.
		h.Close()
		_ = netns.DeleteNamed(name)
	}
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("create netns %s: %w: %w", name, ErrNotPermitted, err)
		}
		return nil, fmt.Errorf("create netns %s: %w", name, err)
	}
	ns := &Namespace{Name: name, Created: true, handle: h}
	// The loopback of a new namespace starts down.
	if err := ns.withHandle(func(nh *netlink.Handle) error {
		lo, err := nh.LinkByName("lo")
		if err != nil {
			return err
		}
		return nh.LinkSetUp(lo)
	}); err != nil {
		ns.Close()
		return nil, fmt.Errorf("create netns %s: bring lo up: %w", name, err)
	}
	return ns, nil
}

// Open opens an existing named namespace.
func Open(name string) (*Namespace, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	h, err := netns.GetFromName(name)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	return &Namespace{Name: name, handle: h}, nil
}

// OpenOrCreate opens the named namespace, creating it when missing.
func OpenOrCreate(name string) (*Namespace, error) {
	if Exists(name) {
		return Open(name)
	}
	return Create(name)
}

// OpenPID opens the network namespace of process pid.
func OpenPID(pid int) (*Namespace, error) {
	h, err := netns.GetFromPid(pid)
	if err != nil {
		return nil, fmt.Errorf("open netns of pid %d: %w", pid, err)
	}
	return &Namespace{handle: h}, nil
}

// OpenPath opens the namespace of a file (a /proc/PID/ns/net, or a bind
// mount of one such as podman's).
func OpenPath(path string) (*Namespace, error) {
	h, err := netns.GetFromPath(path)
	if err != nil {
		return nil, fmt.Errorf("open netns %s: %w", path, err)
	}
	return &Namespace{handle: h, path: path}, nil
}

// Fd returns the namespace's file descriptor, valid until Close.
func (n *Namespace) Fd() int { return int(n.handle) }

// String names the namespace for messages.
func (n *Namespace) String() string {
	if n.Name != "" {
		return n.Name
	}
	if n.path != "" {
		return n.path
	}
	return fmt.Sprintf("netns fd %d", n.handle)
}

// Close releases the handle and, if this process created the namespace,
// deletes it. It is idempotent.
func (n *Namespace) Close() error {
	if n.handle == -1 {
		return nil
	}
	n.handle.Close()
	n.handle = -1
	if n.Created && n.Name != "" {
		if err := netns.DeleteNamed(n.Name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("delete netns %s: %w", n.Name, err)
		}
	}
	return nil
}

// Do runs fn on a locked OS thread inside the namespace. Sockets fn opens
// belong to the namespace and keep working after Do returns.
func (n *Namespace) Do(fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(n.handle); err != nil {
			return fmt.Errorf("enter %s: %w", n, err)
		}
		return fn()
	})
}

// onThread runs fn on a fresh goroutine locked to its OS thread and waits
// for it. Whatever fn did to the thread's network namespace, or however
// it ended (an error half-way, a panic), the thread is put back in the
// namespace it started in before Go may use it again; a thread that
// cannot be put back is never unlocked, so Go ends it with the
// goroutine. A panic in fn is returned as an error.
func onThread(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			// Nothing has moved the thread yet.
			runtime.UnlockOSThread()
			done <- fmt.Errorf("netns: read the thread's namespace: %w", err)
			return
		}
		defer orig.Close()
		err = func() (err error) {
			defer func() {
				if r := recover(); r != nil {
					err = fmt.Errorf("netns: panic in a namespace operation: %v", r)
				}
			}()
			return fn()
		}()
		if backTo(orig) != nil {
			// The thread stays locked and dies with the goroutine, so
			// nothing else runs in the namespace: fn's result stands.
			// (Root of a user namespace may enter a namespace that user
			// namespace owns but not go back to the host's.)
			done <- err
			return
		}
		runtime.UnlockOSThread()
		done <- err
	}()
	return <-done
}

// backTo puts the calling (locked) thread back in namespace orig if it is
// elsewhere, and checks that it is there.
func backTo(orig netns.NsHandle) error {
	if cur, err := netns.Get(); err == nil {
		same := cur.Equal(orig)
		cur.Close()
		if same {
			return nil
		}
	}
	if err := netns.Set(orig); err != nil {
		return fmt.Errorf("netns: restore the thread's namespace: %w", err)
	}
	cur, err := netns.Get()
	if err != nil {
		return fmt.Errorf("netns: check the thread's namespace: %w", err)
	}
	defer cur.Close()
	if !cur.Equal(orig) {
		return errors.New("netns: the thread is still in another namespace")
	}
	return nil
}

func (n *Namespace) withHandle(fn func(*netlink.Handle) error) error {
	return onThread(func() error {
		nh, err := netlink.NewHandleAt(n.handle)
		if err != nil {
			return err
		}
		defer nh.Close()
		return fn(nh)
	})
}

// MoveLink moves the link named from (in the caller's namespace) into n
// and renames it to to. Open file descriptors of the device (a TAP's
// queues) stay valid.
func (n *Namespace) MoveLink(from, to string, addrs ...netip.Prefix) error {
	err := onThread(func() error {
		l, err := netlink.LinkByName(from)
		if err != nil {
			return err
		}
		return netlink.LinkSetNsFd(l, int(n.handle))
	})
	if err != nil {
		return fmt.Errorf("move %s into %s: %w", from, n, err)
	}
	return n.RenameLink(from, to, addrs...)
}

// RenameLink renames link from in n to to, first giving it addrs (see
// LinkConfig.Addrs): the link never shows under its name without them,
// for the programs that look for the address as soon as the name
// appears (slirp4netns's users do).
func (n *Namespace) RenameLink(from, to string, addrs ...netip.Prefix) error {
	return n.withHandle(func(nh *netlink.Handle) error {
		if from != to {
			if _, err := nh.LinkByName(to); err == nil {
				return fmt.Errorf("rename %s to %s in %s: a link named %s already exists there", from, to, n, to)
			}
		}
		l, err := nh.LinkByName(from)
		if err != nil {
			return err
		}
		if err := addAddrs(nh, l, addrs); err != nil {
			return fmt.Errorf("configure %s in %s: %w", from, n, err)
		}
		if from == to {
			return nil
		}
		if err := nh.LinkSetName(l, to); err != nil {
			return fmt.Errorf("rename %s to %s in %s: %w", from, to, n, err)
		}
		return nil
	})
}

// addAddrs adds addrs to l without duplicate address detection; one that
// is there already is no error.
func addAddrs(nh *netlink.Handle, l netlink.Link, addrs []netip.Prefix) error {
	for _, p := range addrs {
		a := &netlink.Addr{IPNet: prefixToIPNet(p), Flags: unix.IFA_F_NODAD}
		if err := nh.AddrAdd(l, a); err != nil && !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("add address %s: %w", p, err)
		}
	}
	return nil
}

// LinkConfig is the kernel side of a link inside a namespace.
type LinkConfig struct {
	// Name of the link inside the namespace.
	Name string
	// Addrs are added without duplicate address detection, so they are
	// usable at once.
	Addrs []netip.Prefix
	// Gateway4 and Gateway6, when valid, become default routes.
	Gateway4, Gateway6 netip.Addr
}

// Configure sets addresses and default routes on a link in n and brings it
// and lo up.
func (n *Namespace) Configure(cfg LinkConfig) error {
	err := n.withHandle(func(nh *netlink.Handle) error {
		l, err := nh.LinkByName(cfg.Name)
		if err != nil {
			return err
		}
		if err := addAddrs(nh, l, cfg.Addrs); err != nil {
			return err
		}
		if err := nh.LinkSetUp(l); err != nil {
			return fmt.Errorf("set up: %w", err)
		}
		if lo, err := nh.LinkByName("lo"); err == nil {
			if err := nh.LinkSetUp(lo); err != nil {
				return fmt.Errorf("set lo up: %w", err)
			}
		}
		for _, gw := range []netip.Addr{cfg.Gateway4, cfg.Gateway6} {
			if !gw.IsValid() {
				continue
			}
			r := &netlink.Route{LinkIndex: l.Attrs().Index, Gw: net.IP(gw.AsSlice())}
			if err := nh.RouteReplace(r); err != nil {
				return fmt.Errorf("default route via %s: %w", gw, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("configure %s in %s: %w", cfg.Name, n, err)
	}
	return nil
}

// LinkExists reports whether a link named name exists in n.
func (n *Namespace) LinkExists(name string) bool {
	found := false
	_ = n.withHandle(func(nh *netlink.Handle) error {
		_, err := nh.LinkByName(name)
		found = err == nil
		return nil
	})
	return found
}

func prefixToIPNet(p netip.Prefix) *net.IPNet {
	bits := p.Addr().BitLen()
	return &net.IPNet{IP: net.IP(p.Addr().AsSlice()), Mask: net.CIDRMask(p.Bits(), bits)}
}
