package daemon

import (
	"testing"

	"github.com/tapstack/tapstack/relay"
)

// TestEngineDefaultsToFlowWhereTheKernelCan: a configuration that names
// no relay engine gets the flow engine where the kernel can peek at an
// offset of a TCP socket, the stack engine where it cannot; a named one
// is kept, and an unknown one refused.
func TestEngineDefaultsToFlowWhereTheKernelCan(t *testing.T) {
	var c Config
	if err := c.fill(); err != nil {
		t.Fatal(err)
	}
	if c.Relay.Engine != relay.DefaultEngine() {
		t.Fatalf("default engine %q, want %q", c.Relay.Engine, relay.DefaultEngine())
	}
	c = Config{Relay: relay.Config{Engine: relay.EngineStack}}
	if err := c.fill(); err != nil || c.Relay.Engine != relay.EngineStack {
		t.Fatalf("engine %q (%v) when stack was named", c.Relay.Engine, err)
	}
	c = Config{Relay: relay.Config{Engine: "fast"}}
	if err := c.fill(); err == nil {
		t.Fatal("an unknown engine was taken")
	}
}
