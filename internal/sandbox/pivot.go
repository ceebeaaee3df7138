package sandbox

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// PrivateMountsEnv marks a process that was started in a mount namespace
// of its own with every mount a slave of the host's (unshare --mount
// --propagation slave): only such a process may PivotRoot, since a
// pivot would otherwise change the root of every other process that
// shares the mount namespace.
const PrivateMountsEnv = "TAPSTACK_PRIVATE_MOUNTS"

// PivotRoot makes this process's root file system, as slirp4netns's
// --enable-sandbox does, a read-only tmpfs holding only the directories
// keep (bound read-only from the old root; absent ones are left out) and
// the file /etc/resolv.conf points to when that lies outside them; the
// old root is detached. It needs a mount namespace of the process's own
// (PrivateMountsEnv) and CAP_SYS_ADMIN there, so it comes before
// Restrict drops capabilities. Every thread shares the root and the
// working directory, so the whole process sees the new root; what
// /proc/PID/root shows from outside is that root.
func PivotRoot(keep ...string) (Report, error) {
	if os.Getenv(PrivateMountsEnv) == "" {
		return nil, errors.New("pivot_root needs a mount namespace of this process's own (start it with unshare --mount --propagation slave)")
	}
	// The mounts seen from here must not propagate back to the host's,
	// whatever the start made of them.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
		return nil, fmt.Errorf("make / a slave: %w", err)
	}
	// As slirp4netns: the new root is a tmpfs mounted over /tmp, seen
	// only in this mount namespace.
	const dir = "/tmp"
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=64k,mode=0755"); err != nil {
		return nil, fmt.Errorf("mount a tmpfs root: %w", err)
	}
	var kept []string
	bindRO := func(src string, isDir bool) error {
		dst := filepath.Join(dir, src)
		if isDir {
			if err := os.MkdirAll(dst, 0o755); err != nil {
				return err
			}
		} else {
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				return err
			}
			if err := os.WriteFile(dst, nil, 0o644); err != nil {
				return err
			}
		}
		if err := unix.Mount(src, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s: %w", src, err)
		}
		if err := unix.Mount("", dst, "", unix.MS_REC|unix.MS_SLAVE, ""); err != nil {
			return fmt.Errorf("make %s a slave: %w", dst, err)
		}
		if err := unix.Mount("", dst, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
			return fmt.Errorf("make %s read-only: %w", src, err)
		}
		kept = append(kept, src)
		return nil
	}
	if keepProc {
		keep = append(keep, "/proc")
	}
	for _, k := range keep {
		if st, err := os.Stat(k); err == nil && st.IsDir() {
			if err := bindRO(k, true); err != nil {
				return nil, err
			}
		}
	}
	if real, err := filepath.EvalSymlinks("/etc/resolv.conf"); err == nil && !under(real, keep) {
		if err := bindRO(real, false); err != nil {
			return nil, err
		}
	}
	old := filepath.Join(dir, "old")
	if err := os.Mkdir(old, 0o700); err != nil {
		return nil, err
	}
	if err := unix.PivotRoot(dir, old); err != nil {
		return nil, fmt.Errorf("pivot_root: %w", err)
	}
	if err := unix.Chdir("/"); err != nil {
		return nil, err
	}
	if err := unix.Unmount("/old", unix.MNT_DETACH); err != nil {
		return nil, fmt.Errorf("detach the old root: %w", err)
	}
	_ = os.Remove("/old")
	// As slirp4netns, a root that cannot be made read-only is no error.
	_ = unix.Mount("", "/", "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "")
	return Report{"root: a read-only tmpfs holding only " + strings.Join(kept, ", ") + " (read-only)"}, nil
}

// under says whether path lies in one of dirs.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if path == d || strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}
