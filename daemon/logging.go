package daemon

import (
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// NewLogger makes a daemon's logger on w: format is text (key=value, the
// default) or json; level is debug, info (the default), warn or error;
// verbose means debug unless level says otherwise. (Start adds the
// daemon's name to every line as netns=NAME.)
func NewLogger(w io.Writer, format, level string, verbose bool) (*slog.Logger, error) {
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
	return slog.New(h), nil
}
