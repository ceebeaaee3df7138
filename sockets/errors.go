package sockets

import (
	"errors"
	"net"
	"os"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// Error is an errno with an optional explanation of what to do about it.
// errors.Is(err, syscall.EXXX) matches its Errno. Socket calls return it
// wrapped in a *net.OpError that names the operation and the addresses.
type Error struct {
	Errno syscall.Errno
	// Msg replaces the errno's text when set.
	Msg string
	// Cause, when set, is a sentinel that errors.Is matches too (such as
	// ErrNeedResolve).
	Cause error
}

func (e *Error) Error() string {
	if e.Msg != "" {
		return e.Msg
	}
	return e.Errno.Error()
}

// Is reports whether target is e's errno. errors.Is asks it first, so
// the common test for an errno builds no Unwrap list.
func (e *Error) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.Errno
}

// errWouldBlock is what a call on a non-blocking socket returns when it
// would wait: one value, as it is the common answer of a busy event loop.
var errWouldBlock = &Error{Errno: syscall.EAGAIN, Msg: "resource temporarily unavailable (non-blocking socket)"}

// Unwrap returns the errno and the cause.
func (e *Error) Unwrap() []error {
	if e.Cause != nil {
		return []error{e.Errno, e.Cause}
	}
	return []error{e.Errno}
}

// Timeout reports whether the error is a timeout, for net.Error.
func (e *Error) Timeout() bool { return e.Errno.Timeout() }

// Temporary reports whether retrying may succeed, for net.Error.
func (e *Error) Temporary() bool { return e.Errno.Temporary() }

// timeoutError is what a call returns when the socket's timeout (or a
// deadline) expires: Python's socket.timeout. It matches ETIMEDOUT and
// os.ErrDeadlineExceeded.
type timeoutError struct{}

func (timeoutError) Error() string   { return "timed out" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }
func (timeoutError) Unwrap() error   { return syscall.ETIMEDOUT }
func (timeoutError) Is(target error) bool {
	return target == os.ErrDeadlineExceeded
}

// closedError is what a call on a closed socket returns: EBADF, and
// errors.Is(err, net.ErrClosed) holds too.
type closedError struct{}

func (closedError) Error() string { return "bad file descriptor (socket is closed)" }
func (closedError) Unwrap() error { return syscall.EBADF }
func (closedError) Is(target error) bool {
	return target == net.ErrClosed
}

var (
	errTimedOut = timeoutError{}
	errClosed   = closedError{}
)

// ErrSocketClosed matches (with errors.Is) the error of any call on a
// socket after Close; so does net.ErrClosed.
var ErrSocketClosed error = errClosed

// ErrNeedResolve is wrapped by the error for a host name given where an IP
// address belongs: resolve it with GetAddrInfo first.
var ErrNeedResolve = errors.New("a host name is not an address: resolve it first with GetAddrInfo")

func errnoErr(e syscall.Errno, msg string) error { return &Error{Errno: e, Msg: msg} }

// fromTCPIP turns a gVisor error into an errno error.
func fromTCPIP(err tcpip.Error) error {
	if err == nil {
		return nil
	}
	e := Errno(err)
	if _, ok := err.(*tcpip.ErrBroadcastDisabled); ok {
		return errnoErr(e, "permission denied: sending to a broadcast address needs SO_BROADCAST (SetSockOpt(SOL_SOCKET, SO_BROADCAST, 1))")
	}
	if _, ok := err.(*tcpip.ErrMessageTooLong); ok {
		return errnoErr(e, "message too long for one datagram")
	}
	return e
}

// opError wraps err with the operation and addresses, as net does.
func (s *Socket) opError(op string, addr net.Addr, err error) error {
	if err == nil {
		return nil
	}
	oe := &net.OpError{Op: op, Net: s.network(), Addr: addr, Err: err}
	if addr == nil {
		if la, lerr := s.localAddr(); lerr == nil && la.Port != 0 {
			oe.Addr = la
		}
	}
	return oe
}

// errnoOf digs the errno out of err, 0 if none.
func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	return syscall.EIO
}
