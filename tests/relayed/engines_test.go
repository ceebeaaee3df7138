package relayed

import (
	"testing"

	"github.com/tapstack/tapstack/daemon"
	"github.com/tapstack/tapstack/relay"
	"github.com/tapstack/tapstack/tests/nstest"
)

// engines runs f once per relay engine, as a sub-test named after it,
// with a daemon configuration that selects it.
func engines(t *testing.T, f func(t *testing.T, cfg daemon.Config)) {
	for _, e := range []string{relay.EngineStack, relay.EngineFlow} {
		t.Run(e, func(t *testing.T) {
			f(t, daemon.Config{Relay: relay.Config{Engine: e}})
		})
	}
}

// checkEngine fails the test unless the engine cfg names carried the
// flows: the flow engine takes its frames before the stack (the link's
// RxDiverted), the stack engine none.
func checkEngine(t *testing.T, env *nstest.Relayed, cfg daemon.Config) {
	t.Helper()
	n := env.Daemon.Host().Link.Stats().RxDiverted
	if flow := cfg.Relay.Engine == relay.EngineFlow; flow != (n > 0) {
		t.Fatalf("engine %q: %d frames diverted to the flow engine", cfg.Relay.Engine, n)
	}
}
