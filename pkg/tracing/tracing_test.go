package tracing_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/tracing"
)

func env(kv ...string) func(string) (string, bool) {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want bool
	}{
		{nil, false},
		{[]string{"OTEL_SERVICE_NAME", "x"}, false},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"}, true},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4317"}, true},
		{[]string{"OTEL_TRACES_EXPORTER", "otlp"}, true},
		{[]string{"OTEL_TRACES_EXPORTER", "none", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"}, false},
		{[]string{"OTEL_SDK_DISABLED", "true", "OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"}, false},
	} {
		if got := tracing.Enabled(env(c.env...)); got != c.want {
			t.Errorf("Enabled(%q) = %v, want %v", c.env, got, c.want)
		}
	}
}

// Off, Start returns no provider; on, a provider whose shutdown returns
// (no collector needs to listen: nothing was exported).
func TestStart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tp, stop, err := tracing.Start(ctx, tracing.Config{Lookup: env()})
	if err != nil || tp != nil || stop(ctx) != nil {
		t.Errorf("Start without OTEL_* = %v, %v", tp, err)
	}
	tp, stop, err = tracing.Start(ctx, tracing.Config{Lookup: env("OTEL_TRACES_EXPORTER", "otlp"), ServiceVersion: "v1"})
	if err != nil || tp == nil {
		t.Fatalf("Start with OTEL_TRACES_EXPORTER=otlp = %v, %v", tp, err)
	}
	if err := stop(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	if _, _, err := tracing.Start(ctx, tracing.Config{ServiceName: " x"}); !errors.Is(err, config.ErrBadConfig) {
		t.Errorf("Start with a bad ServiceName = %v, want ErrBadConfig", err)
	}
}
