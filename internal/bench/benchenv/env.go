// Package benchenv is the environment the scenarios of package bench share
// during one run: etcd (dialled, or embedded and started for the run),
// memcached, a namespace of the run's own with its registered callers, the
// coordinator nodes the scenarios start (in process and as child
// processes), and the keys the baselines write. Close stops all of it and
// deletes the run's keys.
package benchenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/client"
	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/embedded"
	"github.com/coordinator-dev/coordinator/pkg/etcdconn"
	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

const (
	// ProbeTimeout bounds waiting for a leader to apply (Probe) and for
	// nodes to campaign (WaitCampaigning).
	ProbeTimeout = 60 * time.Second
	// RegistrationTTL is the lease TTL of the run's registrations.
	RegistrationTTL = 60 * time.Second
	// ChildStopTimeout bounds waiting for a node to stop before it is
	// killed.
	ChildStopTimeout = 15 * time.Second

	memcachedTimeout = 2 * time.Second
)

// Config is what the environment is built from. Package bench fills in its
// defaults and checks it.
type Config struct {
	// Endpoints of an existing etcd. Empty starts an embedded etcd in a
	// temporary directory on a free port, removed by Close.
	Endpoints []string
	// Memcached servers, host:port.
	Memcached []string
	// Names is the number of registration names the callers hold.
	Names int
	// Keys is the size of the key space.
	Keys int
	// ValueSize is the size of Value.
	ValueSize int
	// LeaseTTL is the nodes' leadership lease TTL.
	LeaseTTL time.Duration
	// DialTimeout bounds connecting to etcd.
	DialTimeout time.Duration
	// Security holds the TLS files and the etcd user of every connection
	// to Endpoints, the child nodes' included; unused with the embedded
	// etcd.
	Security etcdconn.Security
	// Serve returns the command that runs one node as a child process, given
	// the arguments of `coordinator serve`. Nil runs this executable
	// (os.Executable) with them.
	Serve func(args []string) *exec.Cmd
	// Worker returns the command that runs one caller process (see
	// StartWorker). Nil runs this executable with WorkerArgs.
	Worker func() *exec.Cmd
	// Progress receives one line per step.
	Progress io.Writer
}

// Env is the environment of one run. Its exported fields are set by Open
// and only read afterwards.
type Env struct {
	// Namespace is the run's namespace, bench-<random>, and Layout its
	// etcd key layout.
	Namespace string
	Layout    keyspace.Layout
	// Endpoints are etcd's, and Embedded tells whether the run started that
	// etcd itself.
	Endpoints []string
	Embedded  bool
	// Etcd is the run's etcd connection and Client the coordinator client
	// on it.
	Etcd   *clientv3.Client
	Client *client.Client
	// Callers hold one registration per name (Config.Names).
	Callers []*client.Caller
	// Memcache is the run's memcached client.
	Memcache *memcache.Client
	// Value is the value every write writes, Config.ValueSize bytes.
	Value []byte
	// Keys is the key space of the coordinator's writes in memcached.
	Keys []string

	cfg Config
	srv *embedded.Server
	dir string

	progressMu sync.Mutex

	mu       sync.Mutex
	node     *inProcNode
	children []*Child
}

// Validate checks the config; its errors are *config.FieldError naming the
// field. The bench fills every field before it opens an Env, so no field
// has a default here.
func (c *Config) Validate() error {
	switch {
	case len(c.Memcached) == 0:
		return config.Errorf("benchenv", "Memcached", "is empty")
	case c.Names < 1:
		return config.Errorf("benchenv", "Names", "%d is under 1", c.Names)
	case c.Keys < 1:
		return config.Errorf("benchenv", "Keys", "%d is under 1", c.Keys)
	case c.ValueSize < 0:
		return config.Errorf("benchenv", "ValueSize", "%d is negative", c.ValueSize)
	case c.LeaseTTL < time.Second:
		return config.Errorf("benchenv", "LeaseTTL", "%v is under 1s", c.LeaseTTL)
	case c.DialTimeout <= 0:
		return config.Errorf("benchenv", "DialTimeout", "%v is not positive", c.DialTimeout)
	}
	return nil
}

// Open starts or dials etcd, registers the names and checks memcached. When
// it fails, it stops what it had started. An invalid cfg is a
// *config.FieldError.
func Open(ctx context.Context, cfg Config) (*Env, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Env{cfg: cfg}
	if err := e.open(ctx); err != nil {
		e.Close()
		return nil, err
	}
	return e, nil
}

func (e *Env) open(ctx context.Context) error {
	var b [4]byte
	_, _ = rand.Read(b[:])
	e.Namespace = "bench-" + hex.EncodeToString(b[:])
	e.Layout = keyspace.MustNew(e.Namespace)
	e.Endpoints = e.cfg.Endpoints
	if len(e.Endpoints) == 0 {
		dir, err := os.MkdirTemp("", "coordinator-bench-")
		if err != nil {
			return err
		}
		e.dir = dir
		e.Progressf("starting embedded etcd in %s", dir)
		srv, err := embedded.Start(ctx, embedded.Config{Dir: dir, ClientAddr: "127.0.0.1:0", LogLevel: "fatal"})
		if err != nil {
			return err
		}
		e.srv, e.Endpoints, e.Embedded = srv, srv.Endpoints(), true
	}
	cli, err := e.dial(ctx)
	if err != nil {
		return err
	}
	e.Etcd = cli
	e.Client, err = client.New(client.Config{Etcd: cli, Namespace: e.Namespace})
	if err != nil {
		return err
	}
	e.Memcache = newMemcache(e.cfg.Memcached, 512)
	if err := e.Memcache.Ping(); err != nil {
		return fmt.Errorf("memcached at %s does not answer: %w", strings.Join(e.cfg.Memcached, ","), err)
	}
	e.Value = make([]byte, e.cfg.ValueSize)
	for i := range e.Value {
		e.Value[i] = 'a' + byte(i%26)
	}
	e.Keys = make([]string, e.cfg.Keys)
	for i := range e.Keys {
		e.Keys[i] = fmt.Sprintf("%s:k%d", e.Namespace, i)
	}
	e.Progressf("namespace %s, etcd %s, memcached %s",
		e.Namespace, strings.Join(e.Endpoints, ","), strings.Join(e.cfg.Memcached, ","))
	for i := range e.cfg.Names {
		c, err := e.Client.Register(ctx, fmt.Sprintf("w%d", i), client.RegisterConfig{TTL: RegistrationTTL})
		if err != nil {
			return fmt.Errorf("register: %w", err)
		}
		e.Callers = append(e.Callers, c)
	}
	return nil
}

// Dial opens a connection of its own to the run's etcd, with the run's
// security settings; the caller closes it.
func (e *Env) Dial(ctx context.Context) (*clientv3.Client, error) { return e.dial(ctx) }

// dial connects to etcd and checks it answers.
func (e *Env) dial(ctx context.Context) (*clientv3.Client, error) {
	c := etcdconn.Config{Endpoints: e.Endpoints, DialTimeout: e.cfg.DialTimeout}
	if !e.Embedded {
		c.Security = e.cfg.Security
	}
	return etcdconn.Dial(ctx, c)
}

func newMemcache(servers []string, idle int) *memcache.Client {
	mc := memcache.New(servers...)
	mc.Timeout = memcachedTimeout
	mc.MaxIdleConns = idle
	return mc
}

// Close stops every node, deletes the run's keys and stops etcd.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e.StopNode()
	e.StopChildren()
	for _, c := range e.Callers {
		_ = c.Close(ctx)
	}
	if e.Etcd != nil {
		if _, err := e.Etcd.Delete(ctx, e.Layout.Prefix(), clientv3.WithPrefix()); err != nil {
			e.Progressf("cleanup: delete %s: %v", e.Layout.Prefix(), err)
		}
		e.Etcd.Close()
	}
	if e.Memcache != nil {
		e.deleteMemcachedKeys()
		e.Memcache.Close()
	}
	if e.srv != nil {
		e.srv.Close()
	}
	if e.dir != "" {
		os.RemoveAll(e.dir)
	}
}

// memcachedFamilies are the key families a run writes to memcached (Key).
var memcachedFamilies = []string{"k", "mutex", "lead", "gc"}

func (e *Env) deleteMemcachedKeys() {
	keys := make(chan string)
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range keys {
				_ = e.Memcache.Delete(k)
			}
		}()
	}
	for _, p := range memcachedFamilies {
		for i := range e.cfg.Keys {
			keys <- fmt.Sprintf("%s:%s%d", e.Namespace, p, i)
		}
	}
	close(keys)
	wg.Wait()
}

// Progressf writes one line of progress, prefixed with the time of day.
func (e *Env) Progressf(format string, args ...any) {
	e.progressMu.Lock()
	defer e.progressMu.Unlock()
	fmt.Fprintf(e.cfg.Progress, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Key returns the memcached key of operation i of worker w in family fam:
// "k" is the coordinator's key space (Keys), "mutex", "lead" and "gc" the
// baselines' (the etcd mutex, the lease leader, gets+cas).
func (e *Env) Key(fam string, w, i int) string {
	n := KeyIndex(w, i, e.cfg.Keys)
	if fam == "k" {
		return e.Keys[n]
	}
	return fmt.Sprintf("%s:%s%d", e.Namespace, fam, n)
}

// KeyIndex is the index in a key space of keys keys of operation i of
// worker w: consecutive operations of one worker, and the workers, spread
// over the key space.
func KeyIndex(w, i, keys int) int { return (w*7919 + i*31) % keys }

// Caller returns the caller worker w submits under.
func (e *Env) Caller(w int) *client.Caller { return e.Callers[w%len(e.Callers)] }

// Probe submits one operation and waits until it is applied, which proves a
// leader is applying.
func (e *Env) Probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	tok, err := e.Callers[0].Set(ctx, e.Keys[0], e.Value, 0)
	if err != nil {
		return fmt.Errorf("probe: %w", err)
	}
	if err := e.Client.WaitApplied(ctx, tok); err != nil {
		return fmt.Errorf("probe: no leader applied within %s: %w", ProbeTimeout, err)
	}
	return nil
}

// Pending counts the pending batches.
func (e *Env) Pending(ctx context.Context) (int64, error) {
	resp, err := e.Etcd.Get(ctx, e.Layout.OpsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

// Revision returns etcd's current revision, 0 when it cannot be read.
func (e *Env) Revision(ctx context.Context) int64 {
	resp, err := e.Etcd.Get(ctx, "health")
	if err != nil {
		return 0
	}
	return resp.Header.Revision
}
