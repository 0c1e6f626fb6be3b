package memfence_test

import (
	"errors"
	"net"
	"slices"
	"syscall"
	"testing"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
)

// byName returns addr ("127.0.0.1:PORT") as "localhost:PORT": the same
// server, configured by a name that is not its resolved address.
func byName(t *testing.T, addr string) string {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("localhost", port)
}

// refusedAddr returns a loopback address nothing listens on.
func refusedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// keyAt returns a key the writer sends to the server at addr (resolved).
func keyAt(t *testing.T, w *memfence.Writer, addr string) string {
	t.Helper()
	for i := range 1000 {
		k := "k" + string(rune('a'+i%26)) + string(rune('a'+i/26%26))
		if got, err := w.PickServer(k); err == nil && got == addr {
			return k
		}
	}
	t.Fatalf("no key goes to %s", addr)
	return ""
}

// serverOf returns the server err names, failing unless it names exactly
// one.
func serverOf(t *testing.T, what string, err error) string {
	t.Helper()
	ses := memfence.ServerErrors(err)
	var se *memfence.ServerError
	if len(ses) != 1 || !errors.As(err, &se) || se != ses[0] {
		t.Fatalf("%s: error %v names %d servers, want one", what, err, len(ses))
	}
	return se.Server
}

// Every error of a read or write names the server that failed, by the
// address it was configured by (in Config.Servers, or by a Selector that
// is a ServerNamer); errors.Is still sees through it.
func TestErrorsNameTheirServer(t *testing.T) {
	m := testenv.StartMemcached(t)
	live, dead := byName(t, m.Addr), byName(t, refusedAddr(t))
	t.Run("Servers", func(t *testing.T) {
		testErrorsNameTheirServer(t, live, dead, memfence.Config{Servers: []string{live, dead}})
	})
	t.Run("Selector", func(t *testing.T) {
		ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama,
			Servers: []hashring.Server{{Addr: live}, {Addr: dead}}})
		if err != nil {
			t.Fatal(err)
		}
		testErrorsNameTheirServer(t, live, dead, memfence.Config{Selector: ring})
	})
}

func testErrorsNameTheirServer(t *testing.T, live, dead string, cfg memfence.Config) {
	w, err := memfence.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	liveAddr, _ := net.ResolveTCPAddr("tcp", live)
	deadAddr, _ := net.ResolveTCPAddr("tcp", dead)
	kLive, kDead := keyAt(t, w, liveAddr.String()), keyAt(t, w, deadAddr.String())
	ctx := t.Context()

	if err := w.Set(ctx, kLive, []byte("v"), 0, 5); err != nil {
		t.Fatalf("Set at the live server: %v", err)
	}
	err = w.Set(ctx, kDead, []byte("v"), 0, 5)
	if got := serverOf(t, "Set at the stopped server", err); got != dead || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("Set at the stopped server: %v names %q, want %q and connection refused", err, got, dead)
	}
	err = w.Set(ctx, kLive, []byte("old"), 0, 4)
	if got := serverOf(t, "fenced Set", err); got != live || !errors.Is(err, memfence.ErrFenced) {
		t.Fatalf("fenced Set: %v names %q, want %q and ErrFenced", err, got, live)
	}
	if got := serverOf(t, "Delete", w.Delete(ctx, kDead, 5)); got != dead {
		t.Fatalf("Delete names %q, want %q", got, dead)
	}

	_, err = w.Read(ctx, []string{kLive, kDead})
	if got := serverOf(t, "Read of both servers", err); got != dead {
		t.Fatalf("Read names %q, want %q", got, dead)
	}
	if _, err := w.Read(ctx, []string{kLive}); err != nil {
		t.Fatalf("Read at the live server: %v", err)
	}

	errs := w.WriteAll(ctx, nil, 5, []memfence.Write{{Key: kLive, Value: []byte("w")}, {Key: kDead, Value: []byte("w")}})
	if errs[0] != nil {
		t.Fatalf("WriteAll at the live server: %v", errs[0])
	}
	if got := serverOf(t, "WriteAll at the stopped server", errs[1]); got != dead {
		t.Fatalf("WriteAll names %q, want %q", got, dead)
	}
	errs = w.WriteAll(ctx, nil, 4, []memfence.Write{{Key: kLive, Value: []byte("old")}})
	if got := serverOf(t, "fenced WriteAll", errs[0]); got != live || !errors.Is(errs[0], memfence.ErrFenced) {
		t.Fatalf("fenced WriteAll: %v names %q, want %q and ErrFenced", errs[0], got, live)
	}
}

// A read that fails at several servers names each of them.
func TestReadNamesEveryServerThatFailed(t *testing.T) {
	a, b := refusedAddr(t), refusedAddr(t)
	w := newWriter(t, a, b)
	_, err := w.Read(t.Context(), []string{keyAt(t, w, a), keyAt(t, w, b)})
	var names []string
	for _, se := range memfence.ServerErrors(err) {
		names = append(names, se.Server)
	}
	slices.Sort(names)
	want := []string{a, b}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Fatalf("Read of two stopped servers: %v names %q, want %q", err, names, want)
	}
	if len(memfence.ServerErrors(errors.New("no server"))) != 0 || memfence.ServerErrors(nil) != nil {
		t.Fatal("ServerErrors of an error naming no server is not empty")
	}
}
