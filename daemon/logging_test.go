package daemon

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestLoggerFormatsAndLevels(t *testing.T) {
	for _, tc := range []struct {
		format, level string
		verbose       bool
		debugShown    bool
		warnShown     bool
	}{
		{"text", "", false, false, true},
		{"text", "", true, true, true},
		{"json", "debug", false, true, true},
		{"json", "error", true, false, false}, // --log-level wins over -v
		{"", "WARN", false, false, true},
	} {
		var b bytes.Buffer
		l0, err := NewLogger(&b, tc.format, tc.level, tc.verbose)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		l := l0.With("netns", "ns1")
		l.Debug("flow start", "proto", "tcp")
		l.Warn("limit reached")
		out := b.String()
		if got := strings.Contains(out, "flow start"); got != tc.debugShown {
			t.Errorf("%+v: debug shown %v:\n%s", tc, got, out)
		}
		if got := strings.Contains(out, "limit reached"); got != tc.warnShown {
			t.Errorf("%+v: warning shown %v:\n%s", tc, got, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			if tc.format == "json" {
				var m map[string]any
				if err := json.Unmarshal([]byte(line), &m); err != nil || m["netns"] != "ns1" {
					t.Errorf("%+v: line %q is not JSON naming the namespace (%v)", tc, line, err)
				}
			} else if !strings.Contains(line, "netns=ns1") {
				t.Errorf("%+v: line %q does not name the namespace", tc, line)
			}
		}
	}
	for _, bad := range [][2]string{{"xml", ""}, {"text", "loud"}} {
		if _, err := NewLogger(&bytes.Buffer{}, bad[0], bad[1], false); err == nil {
			t.Errorf("--log-format %q --log-level %q accepted", bad[0], bad[1])
		}
	}
}
