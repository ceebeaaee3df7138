package main

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// logFlags choose how the daemon logs: --log-format and --log-level.
type logFlags struct {
	format string
	level  string
}

// newLogger makes the daemon's logger on w. -v (verbose) means debug
// unless --log-level says otherwise; every line carries the namespace.
func newLogger(w io.Writer, format, level string, verbose bool, netns string) (*slog.Logger, error) {
	lvl := slog.LevelInfo
	if verbose {
		lvl = slog.LevelDebug
	}
	if level != "" {
		if err := lvl.UnmarshalText([]byte(level)); err != nil {
			return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
		}
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var h slog.Handler
	switch strings.ToLower(format) {
	case "", "text":
		h = slog.NewTextHandler(w, opts)
	case "json":
		h = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", format)
	}
	l := slog.New(h)
	if netns != "" {
		l = l.With("netns", netns)
	}
	return l, nil
}

// printf adapts a logger to the printf-style hooks of the lower layers,
// at level info.
func printf(l *slog.Logger) func(format string, args ...any) {
	return func(format string, args ...any) { l.Info(fmt.Sprintf(format, args...)) }
}
