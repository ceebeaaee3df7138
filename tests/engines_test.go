package tests

import (
	"testing"

	"github.com/tapstack/tapstack/relay"
)

// engines runs f once per relay engine, as a sub-test named after it;
// flags select the engine on tapstack up and run (--relay-engine).
func engines(t *testing.T, f func(t *testing.T, flags []string)) {
	for _, e := range []string{relay.EngineStack, relay.EngineFlow} {
		t.Run(e, func(t *testing.T) { f(t, []string{"--relay-engine", e}) })
	}
}
