package lab

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	vns "github.com/vishvananda/netns"

	"github.com/tapstack/tapstack/stack/netns"
)

// StateDir is where Up records each lab it runs (<name>.json), for Down.
const StateDir = "/run/tapstack/lab"

// State is what Up records of a running lab: enough for Down to stop the
// process and remove what a killed one left behind.
type State struct {
	Name  string `json:"name"`
	PID   int    `json:"pid"`
	Start uint64 `json:"start"` // the process's start time (/proc/PID/stat): a reused PID is not the lab
	// Namespaces are the nodes' `ip netns` names; deleting one deletes
	// the veths, TAPs and bridge inside it.
	Namespaces []string `json:"namespaces"`
	Links      []string `json:"links"`   // every link end, NETNS/IFACE
	Bridges    []string `json:"bridges"` // every switch's bridge, NETNS/IFACE
	Files      []string `json:"files"`   // /etc/netns directories, daemons' control sockets
}

// Up builds the network of spec, writes to w how to enter each node,
// records it in StateDir and runs it until ctx ends (SIGINT, SIGTERM);
// then it removes it. It is `tapstack lab up`. The state is recorded
// before anything is built, so Down can clean up after a kill at any time.
func Up(ctx context.Context, spec Spec, w io.Writer) (err error) {
	if err := spec.check(); err != nil {
		return err
	}
	if spec.Name == "" {
		var b [3]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		spec.Name = "lab" + hex.EncodeToString(b[:])[:5]
	}
	st := State{Name: spec.Name, PID: os.Getpid(), Start: startTime(os.Getpid())}
	for _, nd := range spec.Nodes {
		ns := spec.Name + "-" + nd.Name
		st.Namespaces = append(st.Namespaces, ns)
		st.Files = append(st.Files, filepath.Join(etcNetns, ns))
	}
	if err := os.MkdirAll(StateDir, 0o755); err != nil {
		return fmt.Errorf("lab %s: %w", spec.Name, err)
	}
	file := filepath.Join(StateDir, spec.Name+".json")
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if errors.Is(err, os.ErrExist) {
		if old, err := readState(spec.Name); err == nil && old.alive() {
			return fmt.Errorf("lab %s: already running (pid %d)", spec.Name, old.PID)
		}
		return fmt.Errorf("lab %s: left behind by a process that ended (%s): remove it with `tapstack lab down %s`", spec.Name, file, spec.Name)
	}
	if err != nil {
		return fmt.Errorf("lab %s: %w", spec.Name, err)
	}
	f.Close()
	defer func() {
		if rmErr := os.Remove(file); err == nil && rmErr != nil {
			err = fmt.Errorf("lab %s: %w", spec.Name, rmErr)
		}
	}()
	if err := writeState(file, st); err != nil {
		return err
	}
	n, err := spec.Build(Options{})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, n.Close()) }()
	st = n.state(st)
	if err := writeState(file, st); err != nil {
		return err
	}
	n.describe(w)
	fmt.Fprintf(w, "ready: Ctrl-C or `tapstack lab down %s` removes it\n", n.Name())
	<-ctx.Done()
	return nil
}

// state completes st with what n made.
func (n *Network) state(st State) State {
	st.Namespaces, st.Files = nil, nil
	for _, nd := range n.Nodes() {
		st.Namespaces = append(st.Namespaces, nd.NetNS())
		st.Files = append(st.Files, filepath.Join(etcNetns, nd.NetNS()))
		if nd.Kind() == Switch {
			st.Bridges = append(st.Bridges, nd.NetNS()+"/br0")
		}
		for _, l := range n.Links() {
			if i := l.Iface(nd); i != "" {
				st.Links = append(st.Links, nd.NetNS()+"/"+i)
			}
		}
		if u := nd.Uplink(); u != nil {
			st.Files = append(st.Files, u.Daemon().ControlPath())
		}
	}
	n.mu.Lock()
	st.Files = append(st.Files, n.files...) // an uplink's resolv.conf
	n.mu.Unlock()
	return st
}

// describe writes the nodes, their addresses and how to enter them, then
// the links.
func (n *Network) describe(w io.Writer) {
	fmt.Fprintf(w, "lab %s, seed %d; each node's /etc/hosts names every node (NODE, NODE.%s)\nnodes:\n", n.Name(), n.Seed(), n.Name())
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	for _, nd := range n.Nodes() {
		var ifaces []string
		for _, l := range n.Links() {
			if i := l.Iface(nd); i != "" {
				for _, a := range l.Addrs(nd) {
					i += " " + a.String()
				}
				ifaces = append(ifaces, i)
			}
		}
		addrs := strings.Join(ifaces, "  ")
		if nd.Kind() == Switch {
			addrs = "bridge br0, ports " + strings.Join(ifaces, " ")
		}
		if u := nd.Uplink(); u != nil {
			addrs += "  " + u.Daemon().Config().TAP
			for _, a := range u.Addrs() {
				addrs += " " + a.String()
			}
			addrs += " (NAT uplink)"
		}
		fmt.Fprintf(tw, "  %s\t%s\tip netns exec %s bash\t%s\n", nd.Name(), nd.Kind(), nd.NetNS(), addrs)
	}
	tw.Flush()
	fmt.Fprintln(w, "links:")
	for _, l := range n.Links() {
		a, b := l.Nodes()
		extra := ""
		if l.Kind() == Wire {
			extra = fmt.Sprintf("seed %d", l.Seed())
		}
		if p := l.CapturePath(); p != "" {
			extra += "  " + p
		}
		if extra != "" {
			extra = "\t" + strings.TrimSpace(extra)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s:%s - %s:%s%s\n", l.Name(), l.Kind(), a.Name(), l.Iface(a), b.Name(), l.Iface(b), extra)
	}
	tw.Flush()
}

// Down removes the lab called name, which Up recorded: if its process
// still runs, it is sent SIGTERM and awaited (it removes the lab itself);
// then whatever the record lists that still exists is deleted (after a
// SIGKILL, a crash, a reboot of nothing but /run). It is `tapstack lab
// down`.
func Down(name string) error {
	st, err := readState(name)
	if err != nil {
		return err
	}
	if st.alive() {
		if err := syscall.Kill(st.PID, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("lab %s: stop pid %d: %w", name, st.PID, err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for st.alive() {
			if time.Now().After(deadline) {
				return fmt.Errorf("lab %s: pid %d still runs 30s after SIGTERM", name, st.PID)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	var errs []error
	for _, ns := range st.Namespaces {
		if ours(name, ns) && netns.Exists(ns) {
			if err := vns.DeleteNamed(ns); err != nil {
				errs = append(errs, fmt.Errorf("namespace %s: %w", ns, err))
			}
		}
	}
	for _, f := range st.Files {
		if ours(name, filepath.Base(f)) {
			if err := os.RemoveAll(f); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	if err := os.Remove(filepath.Join(StateDir, name+".json")); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("lab %s: %w", name, err)
	}
	return nil
}

// ours says whether a recorded name belongs to lab name (a damaged or
// hand-written record cannot make Down delete anything else).
func ours(name, s string) bool { return strings.HasPrefix(s, name+"-") }

// readState reads the record of lab name.
func readState(name string) (State, error) {
	var st State
	if name == "" || len(name) > MaxNameLen || !labNameRE.MatchString(name) {
		return st, fmt.Errorf("lab %q: not a lab name", name)
	}
	data, err := os.ReadFile(filepath.Join(StateDir, name+".json"))
	if errors.Is(err, os.ErrNotExist) {
		var names []string
		ents, _ := os.ReadDir(StateDir)
		for _, e := range ents {
			if n, ok := strings.CutSuffix(e.Name(), ".json"); ok {
				names = append(names, n)
			}
		}
		return st, fmt.Errorf("lab %s: none is recorded in %s (there: %s)", name, StateDir, cmp.Or(strings.Join(names, ", "), "none"))
	}
	if err == nil {
		err = json.Unmarshal(data, &st)
	}
	if err != nil {
		return st, fmt.Errorf("lab %s: %w", name, err)
	}
	return st, nil
}

// writeState replaces file with st, atomically.
func writeState(file string, st State) error {
	data, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	if err := os.Rename(tmp, file); err != nil {
		return fmt.Errorf("lab: %w", err)
	}
	return nil
}

// alive says whether the recorded process still runs (a zombie does not).
func (st State) alive() bool {
	return st.PID > 0 && st.Start != 0 && startTime(st.PID) == st.Start
}

// startTime is the start time of process pid (field 22 of
// /proc/PID/stat), 0 if it does not exist or is a zombie.
func startTime(pid int) uint64 {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:])) // fields from the 3rd on
	if len(f) < 20 || f[0] == "Z" {
		return 0
	}
	t, _ := strconv.ParseUint(f[19], 10, 64)
	return t
}
