// Package logging builds a node's slog logger from a Config (text or JSON
// lines, a level) and bridges zap to it: the etcd client logs through zap,
// and Zap returns a zap logger whose entries go to the same slog handler, so
// one process writes one stream in one format.
package logging

import (
	"io"
	"log/slog"
	"os"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// Formats of Config.Format.
const (
	// FormatText writes slog's key=value text lines.
	FormatText = "text"
	// FormatJSON writes one JSON object per line.
	FormatJSON = "json"
)

// Config configures a logger. Zero values mean the defaults noted.
type Config struct {
	// Format is FormatText or FormatJSON; empty means FormatText.
	Format string
	// Level is the lowest level written; the zero value is slog.LevelInfo.
	Level slog.Level
	// Output receives the lines; nil means os.Stderr.
	Output io.Writer
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	switch c.Format {
	case "", FormatText, FormatJSON:
		return nil
	}
	return config.Errorf("logging", "Format", "%q is not %s or %s", c.Format, FormatText, FormatJSON)
}

// NewHandler returns the slog handler cfg describes; its error is a
// *config.FieldError.
func NewHandler(cfg Config) (slog.Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	out := cfg.Output
	if out == nil {
		out = os.Stderr
	}
	opts := &slog.HandlerOptions{Level: cfg.Level}
	if cfg.Format == FormatJSON {
		return slog.NewJSONHandler(out, opts), nil
	}
	return slog.NewTextHandler(out, opts), nil
}

// New returns the logger cfg describes; its error is a *config.FieldError.
func New(cfg Config) (*slog.Logger, error) {
	h, err := NewHandler(cfg)
	if err != nil {
		return nil, err
	}
	return slog.New(h), nil
}
