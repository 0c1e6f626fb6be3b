// Package tracing sets up OpenTelemetry tracing for a coordinator node from
// the standard OTEL_* environment variables, and leaves it off unless they
// ask for it: a node without them pays nothing.
//
// Tracing is on when OTEL_EXPORTER_OTLP_ENDPOINT or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, or OTEL_TRACES_EXPORTER is
// "otlp"; it stays off when OTEL_SDK_DISABLED is "true" or
// OTEL_TRACES_EXPORTER is "none". Spans go to an OTLP/gRPC exporter, which
// reads the other OTEL_EXPORTER_OTLP_* variables (headers, TLS, timeout,
// compression) itself; OTEL_TRACES_SAMPLER and its argument choose the
// sampler (the SDK's default: parent-based, always on), OTEL_SERVICE_NAME
// and OTEL_RESOURCE_ATTRIBUTES the resource.
//
// The provider Start returns is handed to the packages that make spans: the
// API's calls (package apiserver), the submissions and their group
// transactions (package tokenseq), and the leader's apply of each batch
// (package applier), which joins the submission's trace through the trace
// context stored in the batch's record.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/coordinator-dev/coordinator/pkg/config"
)

// DefaultServiceName is the service.name of a node's spans unless
// OTEL_SERVICE_NAME (or OTEL_RESOURCE_ATTRIBUTES) names another.
const DefaultServiceName = "coordinator"

// Config configures Start. Zero values mean the defaults noted.
type Config struct {
	// Lookup reads the environment; nil means os.LookupEnv. The exporter
	// reads its own OTEL_EXPORTER_OTLP_* variables from the process's
	// environment.
	Lookup func(string) (string, bool)
	// ServiceName is the resource's service.name; empty means
	// DefaultServiceName. OTEL_SERVICE_NAME wins over it.
	ServiceName string
	// ServiceVersion, when set, is the resource's service.version.
	ServiceVersion string
}

// Validate checks the config; its errors are *config.FieldError.
func (c *Config) Validate() error {
	if strings.TrimSpace(c.ServiceName) != c.ServiceName {
		return config.Errorf("tracing", "ServiceName", "%q has surrounding spaces", c.ServiceName)
	}
	return nil
}

// Enabled reports whether the environment lookup asks for tracing (see the
// package documentation).
func Enabled(lookup func(string) (string, bool)) bool {
	if lookup == nil {
		lookup = os.LookupEnv
	}
	get := func(k string) string { v, _ := lookup(k); return strings.TrimSpace(v) }
	if strings.EqualFold(get("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(get("OTEL_TRACES_EXPORTER")) {
	case "none":
		return false
	case "otlp":
		return true
	}
	return get("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Propagator is the trace context propagation of a node's API: W3C Trace
// Context and Baggage, the OpenTelemetry default.
func Propagator() propagation.TextMapPropagator {
	return propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
}

// Start returns the tracer provider the environment asks for, and a
// shutdown that flushes and stops it; a nil provider and a no-op shutdown
// when tracing is off. Its errors are a *config.FieldError for a bad cfg,
// or the exporter's or resource's.
func Start(ctx context.Context, cfg Config) (trace.TracerProvider, func(context.Context) error, error) {
	noop := func(context.Context) error { return nil }
	if err := cfg.Validate(); err != nil {
		return nil, noop, err
	}
	if !Enabled(cfg.Lookup) {
		return nil, noop, nil
	}
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return nil, noop, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.ServiceName)}
	if cfg.ServiceName == "" {
		attrs[0] = attribute.String("service.name", DefaultServiceName)
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, attribute.String("service.version", cfg.ServiceVersion))
	}
	// The environment's attributes come last, so that they win.
	res, err := resource.New(ctx, resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, noop, errors.Join(fmt.Errorf("tracing: resource: %w", err), exp.Shutdown(ctx))
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return tp, tp.Shutdown, nil
}
