package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"

	"github.com/tapstack/tapstack/stack/netns"
)

// watchGone reports (once) when the namespace goes away: a named one when
// its file under /var/run/netns disappears (ip netns del), a process's when
// the process exits. Writes to the TAP would go on succeeding either way.
func watchGone(ctx context.Context, name string, pid int) <-chan string {
	ch := make(chan string, 1)
	if pid != 0 {
		fd, err := unix.PidfdOpen(pid, 0)
		if err != nil {
			ch <- fmt.Sprintf("process %d cannot be watched: %v", pid, err)
			return ch
		}
		go func() {
			defer unix.Close(fd)
			fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
			for ctx.Err() == nil {
				n, err := unix.Poll(fds, 250)
				if err == nil && n > 0 {
					ch <- fmt.Sprintf("process %d exited", pid)
					return
				}
			}
		}()
		return ch
	}
	return watchFile(ctx, filepath.Join(netns.Dir, name), fmt.Sprintf("namespace %s was deleted", name))
}

// watchFile reports gone (once) when the namespace file at path goes
// away: removed, or no longer the same file (a bind mount of a namespace
// that was unmounted). It looks four times a second.
func watchFile(ctx context.Context, path, gone string) <-chan string {
	ch := make(chan string, 1)
	var first unix.Stat_t
	if err := unix.Stat(path, &first); err != nil {
		ch <- fmt.Sprintf("namespace file %s cannot be watched: %v", path, err)
		return ch
	}
	go func() {
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				var st unix.Stat_t
				if err := unix.Stat(path, &st); err != nil || st.Dev != first.Dev || st.Ino != first.Ino {
					ch <- gone
					return
				}
			}
		}
	}()
	return ch
}
