// Package nbio makes read, write and writev system calls on
// non-blocking descriptors without telling Go's scheduler that the
// goroutine enters a system call.
//
// syscall.Syscall marks the goroutine as in a system call, so that the
// runtime's monitor thread (sysmon) may hand its processor to another
// thread should the call block; when that monitor is asleep, because
// every processor was idle, entering a system call wakes it, and it then
// polls every 20 µs for a while. A relay that goes idle between each
// request and its answer woke it twice per exchange: on a virtual
// machine, where each thread switch is expensive, the monitor's sleeps
// and wake-ups were a quarter of the daemon's CPU samples in perf. A call
// on a non-blocking descriptor returns at once (EAGAIN rather than
// block), so it can go straight to the kernel, as the runtime's own
// non-blocking calls do.
//
// Use it only on descriptors in non-blocking mode. A call that moves
// more than Small bytes goes through syscall.Syscall as usual: copying
// 64 KiB into a socket may take long enough that the runtime should be
// free to run other goroutines on another thread meanwhile (relayed bulk
// transfers were about 10 % slower when every call went straight).
package nbio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Small is the most a call moves for this package to make it straight.
const Small = 16 << 10

// Reader reads with read(2), straight while the reads before it were
// small: it guesses a read's size from the one before. The zero value
// is ready to use; one Reader serves one goroutine's reads.
type Reader struct {
	large bool // the last read moved more than Small
}

// Read is read(2).
func (r *Reader) Read(fd int, p []byte) (int, error) {
	var n int
	var err error
	if r.large {
		n, err = slow(unix.Read, fd, p)
	} else {
		n, err = Read(fd, p)
	}
	if err == nil {
		r.large = n > Small
	}
	return n, err
}

// Read is read(2), made straight whatever its size.
func Read(fd int, p []byte) (int, error) { return straight(unix.SYS_READ, fd, p) }

// Write is write(2).
func Write(fd int, p []byte) (int, error) {
	if len(p) > Small {
		return slow(unix.Write, fd, p)
	}
	return straight(unix.SYS_WRITE, fd, p)
}

// straight makes the read or write system call trap on p without
// entersyscall, again after EINTR.
func straight(trap uintptr, fd int, p []byte) (int, error) {
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	for {
		n, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(ptr), uintptr(len(p)))
		switch e {
		case 0:
			return int(n), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}

// slow makes call the usual way, again after EINTR.
func slow[T any](call func(int, T) (int, error), fd int, p T) (int, error) {
	for {
		n, err := call(fd, p)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// maxIovecs is how many buffers Writev takes without allocating.
const maxIovecs = 16

// Writev is writev(2). It allocates nothing for up to 16 buffers.
// Like every call here, it is made again after EINTR.
func Writev(fd int, bufs [][]byte) (int, error) {
	if len(bufs) > maxIovecs {
		return slow(unix.Writev, fd, bufs)
	}
	var iov [maxIovecs]unix.Iovec
	n, size := 0, 0
	for _, b := range bufs {
		if len(b) == 0 {
			continue
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
		size += len(b)
	}
	if size > Small {
		return slow(unix.Writev, fd, bufs)
	}
	for {
		w, _, e := syscall.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(n))
		switch e {
		case 0:
			return int(w), nil
		case unix.EINTR:
			continue
		}
		return 0, e
	}
}
