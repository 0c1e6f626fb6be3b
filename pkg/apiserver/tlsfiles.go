package apiserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"slices"
	"sync"
)

// TLSFiles names the PEM files of a TLS listener.
type TLSFiles struct {
	// CertFile and KeyFile are the server's certificate and key.
	CertFile, KeyFile string
	// ClientCAFile, when set, makes the listener require client
	// certificates signed by one of its CAs (mTLS).
	ClientCAFile string
}

// Load returns the listener's TLS configuration: TLS 1.2 or later, with
// client certificates required and verified when ClientCAFile is set.
func (f TLSFiles) Load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("apiserver: certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("apiserver: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("apiserver: client CA: no certificate in %s", f.ClientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Reloading returns the listener's TLS configuration, as Load does, but
// re-reads the files when one of them changes (another modification time
// or size, checked at each handshake), so that a rotated certificate, key
// or client CA takes effect for new connections without a restart;
// connections already open keep the certificate they were made with. A
// change that does not load (a key written after its certificate, say)
// keeps the last good files until it does. Its error is Load's for the
// first load. The configuration offers HTTP/2 and HTTP/1.1 by ALPN, as
// Serve does.
func (f TLSFiles) Reloading() (*tls.Config, error) {
	r := &reloader{files: f}
	if err := r.reload(); err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return r.current(), nil
		},
	}
	// What every loaded configuration requires, for Config.Validate.
	cfg.ClientAuth = r.current().ClientAuth
	return cfg, nil
}

// reloader holds the TLS configuration last loaded from files, and the
// state of the files it was loaded from.
type reloader struct {
	files TLSFiles

	mu    sync.Mutex
	cfg   *tls.Config
	state []fileState
}

// fileState is what tells a changed file.
type fileState struct {
	mod  int64 // nanoseconds since the epoch
	size int64
}

func (r *reloader) paths() []string {
	return slices.DeleteFunc([]string{r.files.CertFile, r.files.KeyFile, r.files.ClientCAFile},
		func(p string) bool { return p == "" })
}

func (r *reloader) stat() []fileState {
	var st []fileState
	for _, p := range r.paths() {
		fi, err := os.Stat(p)
		if err != nil {
			st = append(st, fileState{})
			continue
		}
		st = append(st, fileState{mod: fi.ModTime().UnixNano(), size: fi.Size()})
	}
	return st
}

// reload loads the files; on success the loaded configuration is the
// current one.
func (r *reloader) reload() error {
	st := r.stat()
	cfg, err := r.files.Load()
	if err != nil {
		return err
	}
	cfg.NextProtos = []string{"h2", "http/1.1"}
	r.mu.Lock()
	r.cfg, r.state = cfg, st
	r.mu.Unlock()
	return nil
}

// current returns the configuration of the files as they are, reloading
// them when they changed and load.
func (r *reloader) current() *tls.Config {
	st := r.stat()
	r.mu.Lock()
	changed := !slices.Equal(st, r.state)
	cfg := r.cfg
	r.mu.Unlock()
	if changed && r.reload() == nil {
		r.mu.Lock()
		cfg = r.cfg
		r.mu.Unlock()
	}
	return cfg
}
