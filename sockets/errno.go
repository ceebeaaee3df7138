package sockets

import (
	"reflect"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

// errnoTable maps every gVisor tcpip.Error type to the errno a Linux
// socket reports in its place. It is the one place this mapping lives; a
// test checks that it names every Err type gVisor declares.
//
// ErrClosedForReceive maps to 0: on a socket it means end of stream, and
// Recv returns no data and no error, as Python's recv returns b"".
var errnoTable = map[reflect.Type]syscall.Errno{
	typeOf(&tcpip.ErrAborted{}):                      syscall.EPIPE,
	typeOf(&tcpip.ErrAddressFamilyNotSupported{}):    syscall.EAFNOSUPPORT,
	typeOf(&tcpip.ErrAlreadyBound{}):                 syscall.EINVAL,
	typeOf(&tcpip.ErrAlreadyConnected{}):             syscall.EISCONN,
	typeOf(&tcpip.ErrAlreadyConnecting{}):            syscall.EALREADY,
	typeOf(&tcpip.ErrBadAddress{}):                   syscall.EFAULT,
	typeOf(&tcpip.ErrBadBuffer{}):                    syscall.EFAULT,
	typeOf(&tcpip.ErrBadLocalAddress{}):              syscall.EADDRNOTAVAIL,
	typeOf(&tcpip.ErrBroadcastDisabled{}):            syscall.EACCES,
	typeOf(&tcpip.ErrClosedForReceive{}):             0,
	typeOf(&tcpip.ErrClosedForSend{}):                syscall.EPIPE,
	typeOf(&tcpip.ErrConnectStarted{}):               syscall.EINPROGRESS,
	typeOf(&tcpip.ErrConnectionAborted{}):            syscall.ECONNABORTED,
	typeOf(&tcpip.ErrConnectionRefused{}):            syscall.ECONNREFUSED,
	typeOf(&tcpip.ErrConnectionReset{}):              syscall.ECONNRESET,
	typeOf(&tcpip.ErrDestinationRequired{}):          syscall.EDESTADDRREQ,
	typeOf(&tcpip.ErrDuplicateAddress{}):             syscall.EEXIST,
	typeOf(&tcpip.ErrDuplicateNICID{}):               syscall.EEXIST,
	typeOf(&tcpip.ErrInvalidNICID{}):                 syscall.ENODEV,
	typeOf(&tcpip.ErrInvalidEndpointState{}):         syscall.EINVAL,
	typeOf(&tcpip.ErrInvalidOptionValue{}):           syscall.EINVAL,
	typeOf(&tcpip.ErrInvalidPortRange{}):             syscall.EINVAL,
	typeOf(&tcpip.ErrMalformedHeader{}):              syscall.EINVAL,
	typeOf(&tcpip.ErrMessageTooLong{}):               syscall.EMSGSIZE,
	typeOf(&tcpip.ErrNetworkUnreachable{}):           syscall.ENETUNREACH,
	typeOf(&tcpip.ErrNoBufferSpace{}):                syscall.ENOBUFS,
	typeOf(&tcpip.ErrNoPortAvailable{}):              syscall.EAGAIN,
	typeOf(&tcpip.ErrHostUnreachable{}):              syscall.EHOSTUNREACH,
	typeOf(&tcpip.ErrHostDown{}):                     syscall.EHOSTDOWN,
	typeOf(&tcpip.ErrNoNet{}):                        syscall.ENONET,
	typeOf(&tcpip.ErrNoSuchFile{}):                   syscall.ENOENT,
	typeOf(&tcpip.ErrNotConnected{}):                 syscall.ENOTCONN,
	typeOf(&tcpip.ErrNotPermitted{}):                 syscall.EPERM,
	typeOf(&tcpip.ErrNotSupported{}):                 syscall.EOPNOTSUPP,
	typeOf(&tcpip.ErrPortInUse{}):                    syscall.EADDRINUSE,
	typeOf(&tcpip.ErrQueueSizeNotSupported{}):        syscall.ENOTTY,
	typeOf(&tcpip.ErrTimeout{}):                      syscall.ETIMEDOUT,
	typeOf(&tcpip.ErrUnknownDevice{}):                syscall.ENODEV,
	typeOf(&tcpip.ErrUnknownNICID{}):                 syscall.ENODEV,
	typeOf(&tcpip.ErrUnknownProtocol{}):              syscall.EINVAL,
	typeOf(&tcpip.ErrUnknownProtocolOption{}):        syscall.ENOPROTOOPT,
	typeOf(&tcpip.ErrWouldBlock{}):                   syscall.EAGAIN,
	typeOf(&tcpip.ErrMissingRequiredFields{}):        syscall.EINVAL,
	typeOf(&tcpip.ErrMulticastInputCannotBeOutput{}): syscall.EINVAL,
	typeOf(&tcpip.ErrEndpointBusy{}):                 syscall.EBUSY,
}

func typeOf(e tcpip.Error) reflect.Type { return reflect.TypeOf(e) }

// Errno returns the errno a Linux socket reports for a gVisor error: 0 for
// nil and for end of stream, EIO for a type this table does not know.
func Errno(err tcpip.Error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := errnoTable[reflect.TypeOf(err)]; ok {
		return e
	}
	return syscall.EIO
}
