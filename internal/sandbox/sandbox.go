// Package sandbox restricts the running daemon once it is set up, as
// slirp4netns's --enable-sandbox and --enable-seccomp do: after start-up
// the daemon only moves packets and sockets, so it gives up what it no
// longer needs (capabilities, the file system, other processes, a set of
// dangerous system calls) and a flaw in it yields as little as possible.
//
// Every restriction applies to all threads of the process: capabilities
// and Landlock through libcap's psx, the seccomp filter with
// SECCOMP_FILTER_FLAG_TSYNC.
package sandbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"unsafe"

	seccomp "github.com/elastic/go-seccomp-bpf"
	"github.com/landlock-lsm/go-landlock/landlock"
	"golang.org/x/net/bpf"
	"golang.org/x/sys/unix"
	"kernel.org/pub/linux/libs/security/libcap/cap"
	"kernel.org/pub/linux/libs/security/libcap/psx"
)

// Report says what Restrict and Seccomp enforced, one line each.
type Report []string

// Restrict is slirp4netns's sandbox for a Go program: no new privileges,
// every capability dropped except CAP_NET_BIND_SERVICE (from the
// effective, permitted, inheritable, ambient and, where this process may
// change it, bounding sets), and with Landlock a file system that is
// read-only and holds only readable (the directories slirp4netns binds
// into its sandbox: /etc and /run, and the file /etc/resolv.conf points
// to), with no signals or abstract sockets towards processes outside
// the sandbox. slirp4netns pivots into an empty tmpfs instead; a Go
// program cannot move all its threads into a new mount namespace once
// it runs, and Landlock gives the same view without one.
func Restrict(readable ...string) (Report, error) {
	var r Report
	if err := allThreadsNoNewPrivs(); err != nil {
		return r, err
	}
	r = append(r, "no_new_privs set")
	dropped, err := dropCapabilities()
	if err != nil {
		return r, err
	}
	r = append(r, dropped)
	paths := append([]string(nil), readable...)
	if real, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil &&
		!strings.HasPrefix(real, "/etc/") && !strings.HasPrefix(real, "/run/") {
		paths = append(paths, real)
	}
	var rules []landlock.Rule
	for _, p := range paths {
		rules = append(rules, landlock.RODirs(p).IgnoreIfMissing())
	}
	abi, err := landlockABI()
	if err != nil {
		return r, fmt.Errorf("the file system cannot be restricted: this kernel has no Landlock (%v)", err)
	}
	if err := landlock.V7.BestEffort().RestrictPaths(rules...); err != nil {
		return r, fmt.Errorf("landlock: %w", err)
	}
	r = append(r, fmt.Sprintf("file system (Landlock ABI %d): read-only, only %s", abi, strings.Join(paths, ", ")))
	if abi >= 6 {
		if err := landlock.V7.BestEffort().RestrictScoped(); err != nil {
			return r, fmt.Errorf("landlock scope: %w", err)
		}
		r = append(r, "signals and abstract unix sockets: only within the sandbox")
	}
	return r, nil
}

// allThreadsNoNewPrivs sets no_new_privs on every thread.
func allThreadsNoNewPrivs() error {
	if _, _, e := psx.Syscall6(unix.SYS_PRCTL, unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0); e != 0 {
		return fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", e)
	}
	return nil
}

// dropCapabilities keeps only CAP_NET_BIND_SERVICE (port forwards may
// listen below 1024), as slirp4netns's sandbox.
func dropCapabilities() (string, error) {
	if err := cap.ResetAmbient(); err != nil && !errors.Is(err, unix.EINVAL) {
		return "", fmt.Errorf("clear ambient capabilities: %w", err)
	}
	bound := "the bounding set is left as it is (no CAP_SETPCAP)"
	if on, err := cap.GetProc().GetFlag(cap.Effective, cap.SETPCAP); err == nil && on {
		var drop []cap.Value
		for v := cap.Value(0); v < cap.MaxBits(); v++ {
			if v != cap.NET_BIND_SERVICE {
				drop = append(drop, v)
			}
		}
		if err := cap.DropBound(drop...); err != nil {
			return "", fmt.Errorf("drop the bounding set: %w", err)
		}
		bound = "bounding set: cap_net_bind_service"
	}
	keep := cap.NewSet()
	had, _ := cap.GetProc().GetFlag(cap.Permitted, cap.NET_BIND_SERVICE)
	if had {
		for _, f := range []cap.Flag{cap.Effective, cap.Permitted, cap.Inheritable} {
			if err := keep.SetFlag(f, true, cap.NET_BIND_SERVICE); err != nil {
				return "", err
			}
		}
	}
	if err := keep.SetProc(); err != nil {
		return "", fmt.Errorf("drop capabilities: %w", err)
	}
	return fmt.Sprintf("capabilities: %q; %s", keep.String(), bound), nil
}

// Blocked returns the system calls slirp4netns's --enable-seccomp blocks
// (its seccompfilter_rules.h): a call to one kills the process, except
// prctl, which fails with EPERM (the Go runtime names its memory
// mappings with it and copes with a refusal).
func Blocked() []string { return append([]string(nil), blocked...) }

var blocked = []string{
	"execve", "execveat", "lookup_dcookie", "pidfd_getfd", "ptrace", "process_vm_readv", "process_vm_writev",
	"delete_module", "finit_module", "init_module", "chroot", "fsconfig", "fsmount", "fsopen", "fspick",
	"mount", "move_mount", "open_tree", "pivot_root", "umount2", "open_by_handle_at",
	"pidfd_open", "pidfd_send_signal", "setns", "unshare", "kexec_file_load", "kexec_load", "reboot",
	"name_to_handle_at",
}

// Seccomp loads a filter on every thread that kills the process on any
// of Blocked, makes prctl fail with EPERM, and kills a call made through
// another architecture's system call table (an x86-64 process making
// i386 calls), which a filter keyed on this architecture's numbers would
// otherwise let by. It sets no_new_privs, which loading a filter needs.
func Seccomp() (Report, error) {
	policy := seccomp.Policy{
		DefaultAction: seccomp.ActionAllow,
		Syscalls: []seccomp.SyscallGroup{
			{Action: seccomp.ActionKillProcess, Names: blocked},
			{Action: seccomp.ActionErrno | seccomp.Action(unix.EPERM), Names: []string{"prctl"}},
		},
	}
	insts, err := policy.Assemble()
	if err != nil {
		return nil, fmt.Errorf("seccomp policy: %w", err)
	}
	native, err := nativeArch()
	if err != nil {
		return nil, err
	}
	// Any other architecture: kill. The library's program sends it to
	// the default action.
	prog := append([]bpf.Instruction{
		bpf.LoadAbsolute{Off: 4, Size: 4}, // seccomp_data.arch
		bpf.JumpIf{Cond: bpf.JumpEqual, Val: native, SkipTrue: 1},
		bpf.RetConstant{Val: uint32(seccomp.ActionKillProcess)},
	}, insts...)
	raw, err := bpf.Assemble(prog)
	if err != nil {
		return nil, fmt.Errorf("seccomp program: %w", err)
	}
	filter := make([]unix.SockFilter, len(raw))
	for i, in := range raw {
		filter[i] = unix.SockFilter{Code: in.Op, Jt: in.Jt, Jf: in.Jf, K: in.K}
	}
	fprog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	// no_new_privs on this thread, then the filter with TSYNC, which
	// gives every thread both; on one locked thread.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return nil, fmt.Errorf("prctl(PR_SET_NO_NEW_PRIVS): %w", err)
	}
	r1, _, e := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog)))
	runtime.KeepAlive(filter)
	if e != 0 {
		return nil, fmt.Errorf("seccomp(SECCOMP_SET_MODE_FILTER): %w", e)
	}
	if r1 != 0 {
		return nil, fmt.Errorf("seccomp: thread %d could not be synchronised", r1)
	}
	return Report{"seccomp: killed on " + strings.Join(blocked, " ") + "; prctl fails with EPERM; other architectures killed"}, nil
}

// nativeArch is the AUDIT_ARCH value of this build's system calls.
func nativeArch() (uint32, error) {
	switch runtime.GOARCH {
	case "amd64":
		return unix.AUDIT_ARCH_X86_64, nil
	case "arm64":
		return unix.AUDIT_ARCH_AARCH64, nil
	case "386":
		return unix.AUDIT_ARCH_I386, nil
	case "arm":
		return unix.AUDIT_ARCH_ARM, nil
	case "riscv64":
		return unix.AUDIT_ARCH_RISCV64, nil
	case "ppc64le":
		return unix.AUDIT_ARCH_PPC64LE, nil
	case "s390x":
		return unix.AUDIT_ARCH_S390X, nil
	}
	return 0, fmt.Errorf("seccomp: no filter for %s", runtime.GOARCH)
}

// landlockABI is the kernel's Landlock ABI version.
func landlockABI() (int, error) {
	v, _, e := unix.Syscall(unix.SYS_LANDLOCK_CREATE_RULESET, 0, 0, unix.LANDLOCK_CREATE_RULESET_VERSION)
	if e != 0 {
		return 0, e
	}
	return int(v), nil
}
