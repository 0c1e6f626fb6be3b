package apiserver

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/coordinator-dev/coordinator/pkg/tlsreload"
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
// or size, checked at each handshake) and when tlsreload.ReloadAll is
// called (on SIGHUP, say), so that a rotated certificate, key or client CA
// takes effect for new connections without a restart; connections already
// open keep the certificate they were made with. A change that does not
// load (a key written after its certificate, say) keeps the last good
// files until it does. Its error is Load's for the first load. The
// configuration offers HTTP/2 and HTTP/1.1 by ALPN, as Serve does.
func (f TLSFiles) Reloading() (*tls.Config, error) {
	files, err := tlsreload.Watch(func() (*tls.Config, error) {
		cfg, err := f.Load()
		if err != nil {
			return nil, err
		}
		cfg.NextProtos = []string{"h2", "http/1.1"}
		return cfg, nil
	}, f.CertFile, f.KeyFile, f.ClientCAFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return files.Current(), nil
		},
	}
	// What every loaded configuration requires, for Config.Validate.
	cfg.ClientAuth = files.Current().ClientAuth
	return cfg, nil
}
