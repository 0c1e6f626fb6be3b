package tlsreload_test

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/tlsreload"
)

var errEmpty = errors.New("empty file")

// watchFile watches the file at path with a load that returns its content,
// and fails on an empty file, as a certificate half written would.
func watchFile(path string) (*tlsreload.Files[string], error) {
	return tlsreload.Watch(func() (string, error) {
		b, err := os.ReadFile(path)
		if err == nil && len(b) == 0 {
			err = errEmpty
		}
		return string(b), err
	}, path, "")
}

// write writes content to path with the modification time mod.
func write(t *testing.T, path, content string, mod time.Time) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mod, mod); err != nil {
		t.Fatal(err)
	}
}

// A changed file is loaded again at the next Current; one that does not
// load leaves the last good result until it does.
func TestCurrentFollowsChanges(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	t0 := time.Now().Add(-time.Hour)
	write(t, path, "one", t0)
	f, err := watchFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := f.Current(); got != "one" {
		t.Fatalf("Current = %q, want one", got)
	}
	write(t, path, "two", t0.Add(time.Second))
	if got := f.Current(); got != "two" {
		t.Fatalf("after a change Current = %q, want two", got)
	}
	write(t, path, "", t0.Add(2*time.Second))
	if got := f.Current(); got != "two" {
		t.Fatalf("after a change that does not load Current = %q, want the last good (two)", got)
	}
	write(t, path, "three", t0.Add(3*time.Second))
	if got := f.Current(); got != "three" {
		t.Fatalf("once it loads again Current = %q, want three", got)
	}
}

// The first load's error is load's own.
func TestWatchReturnsLoadError(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	write(t, path, "", time.Now())
	if _, err := watchFile(path); err != errEmpty {
		t.Fatalf("Watch of an empty file = %v, want errEmpty itself", err)
	}
}

// Reload and ReloadAll load again a file whose change its modification
// time and size do not show; a failure names the file, wraps load's error
// and keeps the last good result.
func TestReloadAll(t *testing.T) {
	runtime.GC() // the Files of other tests leave ReloadAll
	path := filepath.Join(t.TempDir(), "f")
	t0 := time.Now().Add(-time.Hour)
	write(t, path, "aaa", t0)
	f, err := watchFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, "bbb", t0)
	if got := f.Current(); got != "aaa" {
		t.Fatalf("Current = %q: the change was seen without a reload", got)
	}
	if err := f.Reload(); err != nil || f.Current() != "bbb" {
		t.Fatalf("Reload: %v, Current %q; want bbb", err, f.Current())
	}
	write(t, path, "ccc", t0)
	if n, err := tlsreload.ReloadAll(); err != nil || n != 1 || f.Current() != "ccc" {
		t.Fatalf("ReloadAll = %d, %v, Current %q; want ccc", n, err, f.Current())
	}
	write(t, path, "", t0)
	_, err = tlsreload.ReloadAll()
	if !errors.Is(err, errEmpty) || !strings.Contains(err.Error(), path) || f.Current() != "ccc" {
		t.Fatalf("ReloadAll of a file that does not load: %v, Current %q; want errEmpty naming %s, ccc kept", err, f.Current(), path)
	}
}

// A Files no longer reachable leaves ReloadAll.
func TestReloadAllForgetsUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "f")
	write(t, path, "x", time.Now())
	kept, err := watchFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := watchFile(path); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	if n, err := tlsreload.ReloadAll(); err != nil || n != 1 {
		t.Fatalf("ReloadAll = %d, %v; want the one Files still reachable", n, err)
	}
	runtime.KeepAlive(kept)
}
