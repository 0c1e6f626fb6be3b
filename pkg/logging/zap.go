package logging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Zap returns a zap logger whose entries go to h (see NewZapCore), at min
// and above: the etcd client's debug and info chatter is of little use to
// an operator, its warnings are.
func Zap(h slog.Handler, min slog.Level) *zap.Logger {
	return zap.New(NewZapCore(h, min))
}

// NewZapCore returns a zapcore.Core that hands every entry at min or above,
// and that h is enabled for, to h as a slog record: the entry's time,
// message and level (zap's DPanic, Panic and Fatal become slog.LevelError,
// with the zap level kept as "zap_level"), its fields and those added with
// With as attributes, the logger's name as "logger", and its caller and
// stack when zap recorded them.
func NewZapCore(h slog.Handler, min slog.Level) zapcore.Core {
	return &slogCore{h: h, min: min}
}

type slogCore struct {
	h   slog.Handler
	min slog.Level
}

// slogLevel maps a zap level onto slog's.
func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// Enabled reports whether entries at l are written.
func (c *slogCore) Enabled(l zapcore.Level) bool {
	sl := slogLevel(l)
	return sl >= c.min && c.h.Enabled(context.Background(), sl)
}

// With returns a core whose entries carry fields too. A zap.Namespace
// among them opens a slog group: the fields after it, and those of every
// later entry, go in it.
func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	h := c.h
	for i, f := range fields {
		if f.Type == zapcore.NamespaceType {
			if attrs := attrsOf(fields[:i]); len(attrs) > 0 {
				h = h.WithAttrs(attrs)
			}
			return (&slogCore{h: h.WithGroup(f.Key), min: c.min}).With(fields[i+1:])
		}
	}
	if attrs := attrsOf(fields); len(attrs) > 0 {
		h = h.WithAttrs(attrs)
	}
	return &slogCore{h: h, min: c.min}
}

// Check adds c to ce when the entry's level is enabled.
func (c *slogCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(ent.Level) {
		return ce.AddCore(ent, c)
	}
	return ce
}

// Write hands the entry to the slog handler. An entry about a call that
// was cancelled (its "error" field is context.Canceled, or a gRPC status
// Canceled) is written at debug level: the etcd client warns of every
// retried call it gives up on, and a call cancelled by its caller, as every
// call in flight is when a node stops, is the caller's doing, not a fault.
func (c *slogCore) Write(ent zapcore.Entry, fields []zapcore.Field) error {
	level := slogLevel(ent.Level)
	if level > slog.LevelDebug && level < slog.LevelError && cancelled(fields) {
		level = slog.LevelDebug
		if level < c.min || !c.h.Enabled(context.Background(), level) {
			return nil
		}
	}
	r := slog.NewRecord(ent.Time, level, ent.Message, 0)
	if ent.Level > zapcore.ErrorLevel {
		r.AddAttrs(slog.String("zap_level", ent.Level.String()))
	}
	if ent.LoggerName != "" {
		r.AddAttrs(slog.String("logger", ent.LoggerName))
	}
	if ent.Caller.Defined {
		r.AddAttrs(slog.String("caller", ent.Caller.TrimmedPath()))
	}
	r.AddAttrs(attrsOf(fields)...)
	if ent.Stack != "" {
		r.AddAttrs(slog.String("stack", ent.Stack))
	}
	return c.h.Handle(context.Background(), r)
}

// cancelled reports whether fields hold an "error" that is a cancellation.
func cancelled(fields []zapcore.Field) bool {
	for _, f := range fields {
		if f.Type != zapcore.ErrorType || f.Key != "error" {
			continue
		}
		err, ok := f.Interface.(error)
		if ok && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
			return true
		}
	}
	return false
}

// Sync does nothing: slog handlers write as they handle.
func (c *slogCore) Sync() error { return nil }

// attrsOf turns zap fields into slog attributes, in their order; the
// fields after a zap.Namespace become a group of its name. Each
// field is encoded by zap itself (into a map encoder), so every field type
// zap knows (errors, durations, objects, arrays, stringers) comes out as
// zap would write it.
func attrsOf(fields []zapcore.Field) []slog.Attr {
	if len(fields) == 0 {
		return nil
	}
	attrs := make([]slog.Attr, 0, len(fields))
	for i, f := range fields {
		switch f.Type {
		case zapcore.SkipType:
			continue
		case zapcore.NamespaceType:
			// The fields after a namespace belong in it.
			rest := attrsOf(fields[i+1:])
			return append(attrs, slog.Attr{Key: f.Key, Value: slog.GroupValue(rest...)})
		}
		enc := zapcore.NewMapObjectEncoder()
		f.AddTo(enc)
		keys := make([]string, 0, len(enc.Fields))
		for k := range enc.Fields {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			attrs = append(attrs, attrOf(k, enc.Fields[k]))
		}
	}
	return attrs
}

// attrOf is the attribute of one encoded zap value; the maps of objects and
// namespaces become groups.
func attrOf(key string, v any) slog.Attr {
	switch v := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(v))
		for k := range v {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		sub := make([]any, 0, len(keys))
		for _, k := range keys {
			sub = append(sub, attrOf(k, v[k]))
		}
		return slog.Group(key, sub...)
	case fmt.Stringer:
		return slog.String(key, v.String())
	}
	return slog.Any(key, v)
}
