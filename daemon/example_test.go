package daemon_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
)

// A Go program gives a network namespace its network: the namespace
// "demo" (made if missing) gets 10.0.2.100 and fd00::100 behind the
// stack at 10.0.2.2 and fd00::2, DNS at 10.0.2.3, its flows relayed to
// the host's sockets, and the host's 127.0.0.1:8080 forwarded to its
// port 80. It runs until Ctrl-C (then drains) or until the namespace is
// deleted. As root:
//
//	ip netns exec demo curl http://example.org/
func Example() {
	fwd, err := relay.ParseForward("8080:80")
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	d, err := daemon.Start(ctx, daemon.Config{
		Netns: "demo",
		Relay: relay.Config{Forwards: []relay.Forward{fwd}},
		Log:   slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer d.Close()
	fmt.Println("control socket:", d.ControlPath())
	// Run a command in the namespace while the daemon serves it.
	out, err := exec.Command("ip", "netns", "exec", "demo", "ping", "-c1", "10.0.2.2").CombinedOutput()
	fmt.Printf("%s%v\n", out, err)
	if err := d.Wait(ctx); err != nil {
		log.Fatal(err)
	}
}
