// Package tlsreload keeps what a process loads from files (TLS
// certificates, keys and CA bundles) current while it runs, so that files
// rotated on disk take effect without a restart.
//
// Watch loads a set of files once; Current loads them again when one of
// them changed (another modification time or size, checked at each call,
// which a TLS configuration makes at each handshake), and ReloadAll loads
// every set the process watches again at once, changed or not: what a
// process does on SIGHUP. A load that fails (a key written after its
// certificate, say) keeps the last result that loaded until the files load
// again, so connections go on being made with the files as they were.
package tlsreload

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"weak"
)

// Files is what a load function made of a set of files, made again when
// the files change. It is safe for concurrent use.
type Files[T any] struct {
	paths []string
	load  func() (T, error)

	loading sync.Mutex // one load at a time
	mu      sync.Mutex // guards cur and state
	cur     T
	state   []fileState // of paths, when cur was loaded
}

// fileState is what tells a changed file.
type fileState struct {
	mod  int64 // nanoseconds since the epoch
	size int64
	err  bool // the file could not be read
}

// Watch calls load, which reads paths (empty paths are left out), and
// returns the Files that holds its result. The error is load's, as it
// returned it. The Files takes part in ReloadAll for as long as it is
// reachable.
func Watch[T any](load func() (T, error), paths ...string) (*Files[T], error) {
	f := &Files[T]{
		paths: slices.DeleteFunc(slices.Clone(paths), func(p string) bool { return p == "" }),
		load:  load,
	}
	st := f.stat()
	cur, err := load()
	if err != nil {
		return nil, err
	}
	f.cur, f.state = cur, st
	register(weakFiles[T]{weak.Make(f)})
	return f, nil
}

// Current returns the result of the last load, after loading the files
// again when one of them changed since; when that load fails, it returns
// the last result that loaded (and tries again at the next call).
func (f *Files[T]) Current() T {
	st := f.stat()
	f.mu.Lock()
	cur, changed := f.cur, !slices.Equal(st, f.state)
	f.mu.Unlock()
	if !changed {
		return cur
	}
	f.loading.Lock()
	defer f.loading.Unlock()
	f.mu.Lock()
	changed = !slices.Equal(st, f.state)
	f.mu.Unlock()
	if changed {
		_ = f.reload() // on failure, the last good result stays
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cur
}

// Reload loads the files again now, changed or not. On failure the last
// result that loaded stays current, and the error, naming the files, wraps
// load's.
func (f *Files[T]) Reload() error {
	f.loading.Lock()
	defer f.loading.Unlock()
	return f.reload()
}

// reload loads the files; f.loading is held.
func (f *Files[T]) reload() error {
	st := f.stat()
	cur, err := f.load()
	if err != nil {
		return fmt.Errorf("tlsreload: %s: %w", strings.Join(f.paths, ", "), err)
	}
	f.mu.Lock()
	f.cur, f.state = cur, st
	f.mu.Unlock()
	return nil
}

// stat returns the state of f's files.
func (f *Files[T]) stat() []fileState {
	st := make([]fileState, len(f.paths))
	for i, p := range f.paths {
		fi, err := os.Stat(p)
		if err != nil {
			st[i] = fileState{err: true}
			continue
		}
		st[i] = fileState{mod: fi.ModTime().UnixNano(), size: fi.Size()}
	}
	return st
}

// ReloadAll loads every set of files the process watches (see Watch)
// again at once, changed or not, as Reload does, and returns how many sets
// it loaded and the errors of those that failed, joined; each of those
// keeps its last good result.
func ReloadAll() (int, error) {
	registry.mu.Lock()
	all := slices.Clone(registry.all)
	registry.mu.Unlock()
	n := 0
	var errs []error
	for _, r := range all {
		alive, err := r.reload()
		if alive {
			n++
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// registry holds every Files that Watch made, weakly, so that one no
// longer used (its TLS configuration dropped with its client) goes away.
var registry struct {
	mu  sync.Mutex
	all []reloader
}

// reloader is a registered Files.
type reloader interface {
	// reload reloads the Files, and reports whether it still exists.
	reload() (alive bool, err error)
	// alive reports whether the Files still exists.
	alive() bool
}

// register adds r to the registry and drops the Files no longer there.
func register(r reloader) {
	registry.mu.Lock()
	defer registry.mu.Unlock()
	registry.all = append(slices.DeleteFunc(registry.all, func(r reloader) bool { return !r.alive() }), r)
}

// weakFiles is a Files in the registry.
type weakFiles[T any] struct{ p weak.Pointer[Files[T]] }

func (w weakFiles[T]) alive() bool { return w.p.Value() != nil }

func (w weakFiles[T]) reload() (bool, error) {
	f := w.p.Value()
	if f == nil {
		return false, nil
	}
	return true, f.Reload()
}
