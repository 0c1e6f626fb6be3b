// Package readers tests the reader matrix: stock memcached clients, each at
// its default settings (no subclass, no custom transcoder or serde), read
// the values a node writes. 1,000 keys, half text and half binary, are
// written through a node to a pool of three servers spread by ketama, and
// through another node to one server for the clients without
// libmemcached's ketama; each client reads every key and reports the type
// it returned and whether it is the value written.
//
// The toolchains are Debian's packages that scripts/install-deps.sh
// installs (python3-pylibmc, python3-pymemcache, php-cli, php-memcached,
// ruby-dalli, libspymemcached-java and a JDK); a missing one fails its
// test.
package readers_test

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/internal/testenv"
	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/hashring"
	"github.com/coordinator-dev/coordinator/pkg/inspect"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
	"github.com/coordinator-dev/coordinator/pkg/memfence"
	"github.com/coordinator-dev/coordinator/pkg/node"
	"github.com/coordinator-dev/coordinator/pkg/ops"
)

func TestMain(m *testing.M) { testenv.Main(m) }

// perKind is how many text and how many binary keys are written.
const perKind = 500

// matrixValues returns the keys and values written: text-NNN, UTF-8 text
// with letters beyond ASCII, and bin-NNN, bytes that are not UTF-8 (each
// starts with 0xff) and hold NUL, CR and LF.
func matrixValues() map[string][]byte {
	r := rand.New(rand.NewPCG(27, 2))
	vals := make(map[string][]byte, 2*perKind)
	for i := range perKind {
		vals[fmt.Sprintf("text-%03d", i)] = fmt.Appendf(nil, "value %d: héllo wörld, ✓ %s", i, strings.Repeat("ab ", i%40))
		b := make([]byte, 1+r.IntN(2000))
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		b[0] = 0xff
		if len(b) > 4 {
			copy(b[len(b)/2:], "\x00\r\n")
		}
		vals[fmt.Sprintf("bin-%03d", i)] = b
	}
	return vals
}

// deployment is a namespace with its node and servers.
type deployment struct {
	servers []hashring.Server
	term    uint32
}

// write starts n servers and a node over them, named host:port, in
// namespace ns, writes vals through it and returns the deployment once
// they are applied.
func write(t *testing.T, cli *clientv3.Client, ns, host string, dist hashring.Distribution, n int, vals map[string][]byte) deployment {
	t.Helper()
	d := deployment{}
	var addrs []string
	for range n {
		m := testenv.StartMemcached(t)
		_, port, _ := strings.Cut(m.Addr, ":")
		addr := host + ":" + port
		d.servers = append(d.servers, hashring.Server{Addr: addr})
		addrs = append(addrs, addr)
	}
	testenv.StartNode(t, node.Config{Etcd: cli, Layout: keyspace.MustNew(ns), NodeID: ns, Memcached: addrs, Distribution: dist})
	c, err := client.New(client.Config{Etcd: cli, Namespace: ns})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := testenv.Ctx(t, 120*time.Second)
	caller, err := c.Register(ctx, "writer", client.RegisterConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var batch []ops.Op
	var tok client.Token
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		batch = append(batch, ops.Set(k, vals[k], 0))
		if len(batch) == 100 {
			if tok, err = caller.Submit(ctx, batch...); err != nil {
				t.Fatal(err)
			}
			batch = nil
		}
	}
	if len(batch) > 0 {
		if tok, err = caller.Submit(ctx, batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.WaitApplied(ctx, tok); err != nil {
		t.Fatal(err)
	}
	in, err := inspect.New(cli, ns)
	if err != nil {
		t.Fatal(err)
	}
	st, err := in.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d.term = uint32(st.Term)
	return d
}

// kindReport is what a reader found of one kind of key (text or bin).
type kindReport struct {
	Checked int `json:"checked"`
	OK      int `json:"ok"`
	Missing int `json:"missing"`
	Wrong   int `json:"wrong"`
	// Types counts the types the client returned, by the client's name
	// for them.
	Types map[string]int `json:"types"`
	// UTF8Decoded counts the values returned as a string equal to the
	// value decoded as UTF-8 (spymemcached).
	UTF8Decoded int `json:"utf8_decoded"`
	// UserFlags are the flags php-memcached reports (its user flags, the
	// high 16 bits).
	UserFlags []int    `json:"user_flags"`
	Examples  []string `json:"examples"`
}

// report is a reader's report: "text" and "bin".
type report map[string]kindReport

// reader is one client of the matrix.
type reader struct {
	// name names the subtest.
	name            string
	client, setting string
	// on is the deployment the client reads: pool (three servers by
	// address, ketama), names (three servers by host name, ketama) or
	// single (one server).
	on string
	// run runs the client over servers with the keys file and returns its
	// report.
	run func(t *testing.T, servers []hashring.Server, keysFile string) report
	// binary is the type and check binary values are expected to come
	// back with; text values come back equal, as type text.
	text, binary string
	// binaryDecoded: binary values come back as strings decoded as UTF-8.
	binaryDecoded bool
}

// TestReaderMatrix writes 1,000 keys through a node and reads them with
// every client of the matrix at its default settings. spymemcached's
// ketama names a server by the host name it looks up for its address
// (InetSocketAddress.getHostName: a reverse lookup for an IP address), so
// it reads a pool whose topology names the servers by host name. Each must
// return
// every text value as written and every binary value as written (as
// bytes, or a binary string), but spymemcached, whose default transcoder
// returns a String, decoded as UTF-8, for flags whose low bits are 0 (an
// invalid sequence becomes U+FFFD). The table of what each returned is
// logged.
func TestReaderMatrix(t *testing.T) {
	py := debianPython(t)
	php := tool(t, "php", "php-cli", "-r", `exit(class_exists("Memcached") ? 0 : 3);`)
	ruby := tool(t, "ruby", "ruby-dalli", "-e", `require "dalli"`)
	java := tool(t, "java", "default-jdk-headless", "-version")
	const spyJar = "/usr/share/java/spymemcached.jar"
	if _, err := os.Stat(spyJar); err != nil {
		t.Fatalf("spymemcached is not installed (scripts/install-deps.sh installs libspymemcached-java): %v", err)
	}
	_, cli := testenv.Etcd(t)
	vals := matrixValues()
	deployments := map[string]deployment{
		"pool":   write(t, cli, "readers-pool", "127.0.0.1", hashring.Ketama, 3, vals),
		"names":  write(t, cli, "readers-names", "localhost", hashring.Ketama, 3, vals),
		"single": write(t, cli, "readers-single", "127.0.0.1", hashring.Modula, 1, vals),
	}
	keysFile := filepath.Join(t.TempDir(), "keys")
	var lines []byte
	for k, v := range vals {
		lines = fmt.Appendf(lines, "%s %s\n", k, hex.EncodeToString(v))
	}
	if err := os.WriteFile(keysFile, lines, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, d := range deployments {
		checkFlags(t, d, vals)
	}

	python := func(client string) func(*testing.T, []hashring.Server, string) report {
		return func(t *testing.T, servers []hashring.Server, keys string) report {
			return runReader(t, exec.Command(py, "testdata/read_python.py", client, serverList(servers, true), keys))
		}
	}
	readers := []reader{
		{name: "gomemcache-ketama", client: "gomemcache", setting: "memcache.NewFromSelector(ketama ring, pkg/hashring)", on: "pool", run: readGomemcache, text: "[]byte", binary: "[]byte"},
		{name: "gomemcache", client: "gomemcache", setting: "memcache.New(server)", on: "single", run: readGomemcache, text: "[]byte", binary: "[]byte"},
		{name: "pylibmc", client: "pylibmc 1.6", setting: `Client(servers, behaviors={"ketama_weighted": True})`, on: "pool", run: python("pylibmc"), text: "bytes", binary: "bytes"},
		{name: "pymemcache", client: "pymemcache 3.5", setting: "Client(server)", on: "single", run: python("pymemcache"), text: "bytes", binary: "bytes"},
		{name: "pymemcache-pickle", client: "pymemcache 3.5", setting: "Client(server, serde=pickle_serde)", on: "single", run: python("pymemcache-pickle"), text: "bytes", binary: "bytes"},
		{name: "php-memcached", client: "php-memcached 3.2", setting: "OPT_LIBKETAMA_COMPATIBLE", on: "pool", text: "string", binary: "string",
			run: func(t *testing.T, servers []hashring.Server, keys string) report {
				return runReader(t, exec.Command(php, "testdata/read.php", serverList(servers, true), keys))
			}},
		{name: "dalli", client: "Dalli 3.0", setting: "Dalli::Client.new(server)", on: "single", text: "String(ASCII-8BIT)", binary: "String(ASCII-8BIT)",
			run: func(t *testing.T, servers []hashring.Server, keys string) report {
				return runReader(t, exec.Command(ruby, "testdata/read_dalli.rb", servers[0].Addr, keys))
			}},
		{name: "spymemcached", client: "spymemcached 2.12", setting: "KetamaConnectionFactory(KETAMA_HASH, LIBMEMCACHED key format), default transcoder", on: "names",
			text: "java.lang.String", binary: "java.lang.String", binaryDecoded: true,
			run: func(t *testing.T, servers []hashring.Server, keys string) report {
				return runReader(t, exec.Command(java, "-cp", spyJar, "testdata/Read.java", "ketama", serverList(servers, false), keys))
			}},
	}
	var table []string
	for _, r := range readers {
		d := deployments[r.on]
		where := map[string]string{"pool": "3 servers, ketama", "names": "3 servers by name, ketama", "single": "1 server"}[r.on]
		t.Run(r.name, func(t *testing.T) {
			rep := r.run(t, d.servers, keysFile)
			text, bin := rep["text"], rep["bin"]
			if text.Checked != perKind || text.OK != perKind || text.Types[r.text] != perKind {
				t.Errorf("%s (%s): text values: %+v; want all %d as %s", r.client, r.setting, text, perKind, r.text)
			}
			switch {
			case bin.Checked != perKind || bin.Types[r.binary] != perKind:
				t.Errorf("%s (%s): binary values: %+v; want all %d as %s", r.client, r.setting, bin, perKind, r.binary)
			case r.binaryDecoded && bin.UTF8Decoded != perKind:
				t.Errorf("%s (%s): binary values: %+v; want all %d as the value decoded as UTF-8", r.client, r.setting, bin, perKind)
			case !r.binaryDecoded && bin.OK != perKind:
				t.Errorf("%s (%s): binary values: %+v; want all %d as written", r.client, r.setting, bin, perKind)
			}
			for _, f := range slices.Concat(text.UserFlags, bin.UserFlags) {
				if uint32(f) != d.term {
					t.Errorf("php-memcached's user flags %d, want the term %d", f, d.term)
				}
			}
			table = append(table, fmt.Sprintf("%-18s | %-70s | %-17s | text: %d/%d %s | binary: %d/%d %s, %d decoded as UTF-8",
				r.client, r.setting, where, text.OK, text.Checked, typesOf(text), bin.OK, bin.Checked, typesOf(bin), bin.UTF8Decoded))
		})
	}
	t.Logf("reader matrix (value as written / checked, type returned):\n%s", strings.Join(table, "\n"))
}

// checkFlags checks that every item's flags are the term in the high 16
// bits and 0 in the low 16.
func checkFlags(t *testing.T, d deployment, vals map[string][]byte) {
	t.Helper()
	mc := newGomemcache(t, d.servers)
	for k := range vals {
		it, err := mc.Get(k)
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if it.Flags != d.term<<16 || it.Flags&0xffff != 0 || memfence.TermOf(it.Flags) != d.term {
			t.Fatalf("%s has flags %#x, want the term %d in the high 16 bits and 0 in the low 16", k, it.Flags, d.term)
		}
	}
}

// newGomemcache returns a gomemcache client over servers: pkg/hashring's
// ketama for several, the server itself for one.
func newGomemcache(t *testing.T, servers []hashring.Server) *memcache.Client {
	t.Helper()
	var mc *memcache.Client
	if len(servers) == 1 {
		mc = memcache.New(servers[0].Addr)
	} else {
		ring, err := hashring.New(hashring.Config{Distribution: hashring.Ketama, Servers: servers})
		if err != nil {
			t.Fatal(err)
		}
		mc = memcache.NewFromSelector(ring)
	}
	t.Cleanup(func() { mc.Close() })
	return mc
}

// readGomemcache reads the keys file with gomemcache.
func readGomemcache(t *testing.T, servers []hashring.Server, keysFile string) report {
	t.Helper()
	b, err := os.ReadFile(keysFile)
	if err != nil {
		t.Fatal(err)
	}
	mc := newGomemcache(t, servers)
	rep := report{}
	for line := range strings.Lines(string(b)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), " ")
		want, err := hex.DecodeString(v)
		if err != nil {
			t.Fatal(err)
		}
		kind, _, _ := strings.Cut(k, "-")
		r := rep[kind]
		if r.Types == nil {
			r.Types = map[string]int{}
		}
		r.Checked++
		it, err := mc.Get(k)
		switch {
		case errors.Is(err, memcache.ErrCacheMiss):
			r.Missing++
		case err != nil:
			t.Fatal(err)
		default:
			r.Types["[]byte"]++
			if bytes.Equal(it.Value, want) {
				r.OK++
			} else {
				r.Wrong++
			}
		}
		rep[kind] = r
	}
	return rep
}

// runReader runs a reader program from this directory and decodes its
// report.
func runReader(t *testing.T, cmd *exec.Cmd) report {
	t.Helper()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s: %v\n%s", cmd, err, stderr.String())
	}
	var rep report
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("%s printed %q: %v\n%s", cmd, out, err, stderr.String())
	}
	return rep
}

// serverList is servers as host:port, or host:port:weight, comma separated.
func serverList(servers []hashring.Server, weights bool) string {
	ss := make([]string, len(servers))
	for i, s := range servers {
		ss[i] = s.Addr
		if weights {
			ss[i] += ":" + strconv.FormatUint(uint64(max(s.Weight, 1)), 10)
		}
	}
	return strings.Join(ss, ",")
}

// typesOf is a kind's types as "type" or "type1+type2".
func typesOf(r kindReport) string {
	var ts []string
	for ty := range r.Types {
		ts = append(ts, ty)
	}
	slices.Sort(ts)
	return strings.Join(ts, "+")
}

// debianPython is Debian's python3, with the python3-pylibmc and
// python3-pymemcache scripts/install-deps.sh installs; the test fails
// without them.
func debianPython(t *testing.T) string {
	t.Helper()
	const py = "/usr/bin/python3"
	if out, err := exec.Command(py, "-c", "import pylibmc, pymemcache").CombinedOutput(); err != nil {
		t.Fatalf("%s with pylibmc and pymemcache is missing (scripts/install-deps.sh installs python3-pylibmc and python3-pymemcache): %v\n%s", py, err, out)
	}
	return py
}

// tool returns the path of name, which must run args successfully; the
// test fails otherwise, naming the Debian package scripts/install-deps.sh
// installs it with.
func tool(t *testing.T, name, pkg string, args ...string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is missing (scripts/install-deps.sh installs %s): %v", name, pkg, err)
	}
	if out, err := exec.Command(p, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %q failed (scripts/install-deps.sh installs %s): %v\n%s", p, args, pkg, err, out)
	}
	return p
}
