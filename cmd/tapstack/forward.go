package main

import (
	"fmt"
	"io"

	"github.com/tapstack/tapstack/internal/control"
)

func runForward(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("forward", "add SPEC | rm SPEC | ls", stderr)
	var cf controlFlags
	cf.register(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	a := fs.Args()
	var req control.Request
	switch {
	case len(a) == 2 && (a[0] == "add" || a[0] == "rm"):
		req = control.Request{Op: a[0], Spec: a[1]}
	case len(a) == 1 && a[0] == "ls":
		req = control.Request{Op: "ls"}
	default:
		fmt.Fprintln(stderr, "tapstack forward: want add SPEC, rm SPEC or ls (SPEC is [HOSTADDR:]HOSTPORT:NSPORT[/tcp|/udp]; see -h)")
		return errUsage
	}
	resp, err := control.Call(cf.socket(), req)
	if err != nil {
		return err
	}
	for _, f := range resp.Forwards {
		fmt.Fprintln(stdout, f)
	}
	return nil
}
