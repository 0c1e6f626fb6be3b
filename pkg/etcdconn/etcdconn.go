// Package etcdconn is how a process reaches etcd: the endpoints, the TLS
// files and the user it authenticates as, checked before use and turned
// into an etcd client configuration by etcd's own helpers (the path
// etcdctl takes), and a Dial that fails fast, with an error that tells an
// unreachable etcd, a refused user and a TLS failure apart.
//
// TLS is used when an endpoint is https:// or a TLS setting is given.
// Without CACert the server's certificate is checked against the system's
// roots. With client-certificate authentication on the server and auth
// enabled, etcd takes the common name of the client certificate as the user
// name when no Username is given. Rotated TLS files are used by the
// client's next connections without a restart (see Config.ClientConfig).
package etcdconn

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/coordinator-dev/coordinator/pkg/config"
	"github.com/coordinator-dev/coordinator/pkg/tlsreload"
)

// DefaultDialTimeout bounds Dial when Config.DialTimeout is zero.
const DefaultDialTimeout = 5 * time.Second

// Security is how a process proves itself to etcd and checks etcd's
// identity. The zero value is a plain connection without a user.
type Security struct {
	// CACert is the PEM file of the certificate authorities that sign
	// etcd's server certificate. Empty with https:// endpoints means the
	// system's roots.
	CACert string
	// Cert is the PEM file of the client certificate, for etcd's
	// client-certificate authentication; it needs Key.
	Cert string
	// Key is the PEM file of Cert's private key; it needs Cert.
	Key string
	// InsecureSkipTLSVerify accepts any server certificate. It is for
	// tests and emergencies only: anyone on the path can pose as etcd.
	InsecureSkipTLSVerify bool
	// Username is the etcd user to authenticate as with Password. Empty
	// means no password authentication (with a client certificate, etcd
	// takes the certificate's common name as the user).
	Username string
	// Password is Username's password; it needs Username. It is never
	// printed: Security's String and Config's errors leave it out.
	// ReadPasswordFile reads it from a file, which keeps it off command
	// lines.
	Password string
}

// TLS reports whether a TLS setting is given.
func (s Security) TLS() bool {
	return s.CACert != "" || s.Cert != "" || s.Key != "" || s.InsecureSkipTLSVerify
}

// String describes the settings without the password.
func (s Security) String() string {
	var parts []string
	for _, f := range []struct{ name, v string }{{"cacert", s.CACert}, {"cert", s.Cert}, {"key", s.Key}, {"user", s.Username}} {
		if f.v != "" {
			parts = append(parts, f.name+"="+f.v)
		}
	}
	if s.Password != "" {
		parts = append(parts, "password=(set)")
	}
	if s.InsecureSkipTLSVerify {
		parts = append(parts, "insecure-skip-tls-verify")
	}
	return "{" + strings.Join(parts, " ") + "}"
}

// GoString is String, so that %#v does not print the password either.
func (s Security) GoString() string { return "etcdconn.Security" + s.String() }

// Validate checks the settings on their own: pairs that need each other,
// and files that must be readable. Its errors are *config.FieldError of
// package "etcdconn" naming the field.
func (s Security) Validate() error {
	const pkg = "etcdconn"
	switch {
	case s.Cert != "" && s.Key == "":
		return config.Errorf(pkg, "Key", "is required with Cert %q", s.Cert)
	case s.Key != "" && s.Cert == "":
		return config.Errorf(pkg, "Cert", "is required with Key %q", s.Key)
	case s.Password != "" && s.Username == "":
		return config.Errorf(pkg, "Username", "is required with Password")
	case s.Username != "" && s.Password == "":
		return config.Errorf(pkg, "Password", "is required with Username %q", s.Username)
	}
	for _, f := range []struct{ field, path string }{{"CACert", s.CACert}, {"Cert", s.Cert}, {"Key", s.Key}} {
		if f.path == "" {
			continue
		}
		fh, err := os.Open(f.path)
		if err != nil {
			return config.Errorf(pkg, f.field, "cannot read %q: %w", f.path, err)
		}
		fh.Close()
	}
	if s.CACert != "" {
		pem, err := os.ReadFile(s.CACert)
		if err != nil {
			return config.Errorf(pkg, "CACert", "cannot read %q: %w", s.CACert, err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return config.Errorf(pkg, "CACert", "%q holds no PEM certificate", s.CACert)
		}
	}
	if s.Cert != "" {
		if _, err := tls.LoadX509KeyPair(s.Cert, s.Key); err != nil {
			return config.Errorf(pkg, "Cert", "%q with Key %q: %w", s.Cert, s.Key, err)
		}
	}
	return nil
}

// Config is how a process reaches etcd. Zero values mean the defaults
// noted.
type Config struct {
	// Endpoints are etcd's client URLs (http://host:port or
	// https://host:port) or host:port, which takes TLS when Security has a
	// TLS setting. One at least; http and https do not mix.
	Endpoints []string
	// DialTimeout bounds Dial's first answer from etcd and the fetch of
	// the authentication token; zero means DefaultDialTimeout.
	DialTimeout time.Duration
	// Security holds the TLS files and the user.
	Security Security
	// Logger receives the etcd client's log; nil means zap.NewNop().
	Logger *zap.Logger
}

// Validate checks the config; its errors are *config.FieldError of package
// "etcdconn" naming the field (Endpoints, DialTimeout, or a Security
// field).
func (c Config) Validate() error {
	const pkg = "etcdconn"
	if len(c.Endpoints) == 0 {
		return config.Errorf(pkg, "Endpoints", "none given")
	}
	if c.DialTimeout < 0 {
		return config.Errorf(pkg, "DialTimeout", "%s is negative", c.DialTimeout)
	}
	var plain, secure string
	for _, ep := range c.Endpoints {
		scheme, err := endpointScheme(ep)
		if err != nil {
			return config.Errorf(pkg, "Endpoints", "%w", err)
		}
		switch scheme {
		case "http":
			plain = ep
		case "https":
			secure = ep
		}
	}
	switch {
	case plain != "" && secure != "":
		return config.Errorf(pkg, "Endpoints", "%q is http and %q is https: use one scheme", plain, secure)
	case plain != "" && c.Security.TLS():
		// etcd's client drops TLS on http:// endpoints: the files would
		// be ignored without a word.
		return config.Errorf(pkg, "Endpoints", "%q is http:// but TLS settings are given: use https://", plain)
	}
	return c.Security.Validate()
}

// endpointScheme returns "http", "https", or "" for host:port.
func endpointScheme(ep string) (string, error) {
	if !strings.Contains(ep, "://") {
		if ep == "" || strings.ContainsAny(ep, "/ ") {
			return "", fmt.Errorf("%q is not a URL nor host:port", ep)
		}
		return "", nil
	}
	u, err := url.Parse(ep)
	if err != nil {
		return "", fmt.Errorf("%q: %w", ep, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("%q: scheme %q is not http nor https", ep, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("%q has no host", ep)
	}
	return u.Scheme, nil
}

// secure reports whether the connection uses TLS.
func (c Config) secure() bool {
	if c.Security.TLS() {
		return true
	}
	for _, ep := range c.Endpoints {
		if s, _ := endpointScheme(ep); s == "https" {
			return true
		}
	}
	return false
}

// ClientConfig validates c and returns the etcd client configuration,
// built by clientv3.NewClientConfig from etcd's own declarative
// configuration as etcdctl builds it.
//
// With TLS files (CACert, Cert and Key), every new connection of the
// client (the first, and each reconnect) is made with the files as they
// are then: etcd's configuration reads the client certificate and key at
// each handshake, and is built again, which reads the CA bundle, when one
// of the files changes or on tlsreload.ReloadAll (on SIGHUP, say). A CA
// bundle that does not load keeps the last one that did; a certificate and
// key that do not match (one written, the other not yet) fail the
// handshake, which the client makes again.
func (c Config) ClientConfig() (clientv3.Config, error) {
	if err := c.Validate(); err != nil {
		return clientv3.Config{}, err
	}
	lg := c.Logger
	if lg == nil {
		lg = zap.NewNop()
	}
	spec := &clientv3.ConfigSpec{
		Endpoints:   c.Endpoints,
		DialTimeout: cmp.Or(c.DialTimeout, DefaultDialTimeout),
		Secure: &clientv3.SecureConfig{
			Cacert:             c.Security.CACert,
			Cert:               c.Security.Cert,
			Key:                c.Security.Key,
			InsecureTransport:  !c.secure(),
			InsecureSkipVerify: c.Security.InsecureSkipTLSVerify,
		},
	}
	if c.Security.Username != "" {
		spec.Auth = &clientv3.AuthConfig{Username: c.Security.Username, Password: c.Security.Password}
	}
	cc, err := clientv3.NewClientConfig(spec, lg)
	if err != nil {
		return clientv3.Config{}, fmt.Errorf("%w: etcd TLS settings: %w", ErrTLS, err)
	}
	cc.Logger = lg
	if s := c.Security; s.CACert != "" || s.Cert != "" {
		files, err := tlsreload.Watch(func() (*tls.Config, error) {
			cc, err := clientv3.NewClientConfig(spec, lg)
			if err != nil {
				return nil, err
			}
			return cc.TLS, nil
		}, s.CACert, s.Cert, s.Key)
		if err != nil {
			return clientv3.Config{}, fmt.Errorf("%w: etcd TLS settings: %w", ErrTLS, err)
		}
		// The client's options come after its own transport credentials,
		// which these replace.
		cc.TLS = files.Current()
		cc.DialOptions = append(cc.DialOptions, grpc.WithTransportCredentials(&reloadingCreds{files: files}))
	}
	return *cc, nil
}

// ParseUser splits etcdctl's --user spelling, "name:password" or "name",
// at the first colon.
func ParseUser(s string) (user, password string) {
	user, password, _ = strings.Cut(s, ":")
	return user, password
}

// MaxPasswordFileBytes bounds what ReadPasswordFile reads: far more than a
// password, far less than a file named by mistake.
const MaxPasswordFileBytes = 4096

// ErrPasswordFile is wrapped by every error of ReadPasswordFile.
var ErrPasswordFile = errors.New("unusable password file")

// ReadPasswordFile returns the password held in the file at path: its
// content without the line ending that editors and echo add. A file that
// cannot be read, is empty, holds more than one line, or is over
// MaxPasswordFileBytes is an error that wraps ErrPasswordFile (and the
// cause, such as fs.ErrNotExist); no error holds any of the file's content.
func ReadPasswordFile(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrPasswordFile, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxPasswordFileBytes+1))
	if err != nil {
		return "", fmt.Errorf("%w: %s: %w", ErrPasswordFile, path, err)
	}
	if len(b) > MaxPasswordFileBytes {
		return "", fmt.Errorf("%w: %s is over %d bytes", ErrPasswordFile, path, MaxPasswordFileBytes)
	}
	pw := strings.TrimRight(string(b), "\r\n")
	switch {
	case pw == "":
		return "", fmt.Errorf("%w: %s holds no password", ErrPasswordFile, path)
	case strings.ContainsAny(pw, "\r\n"):
		return "", fmt.Errorf("%w: %s holds more than one line", ErrPasswordFile, path)
	}
	return pw, nil
}

// Errors of Dial, for errors.Is; each error Dial returns for a valid Config
// wraps one of them and the cause.
var (
	// ErrUnreachable: no endpoint answered within the dial timeout.
	ErrUnreachable = errors.New("etcd unreachable")
	// ErrAuth: etcd refused the user: wrong name or password, an
	// unknown user, or no user where auth is enabled.
	ErrAuth = errors.New("etcd refused the credentials")
	// ErrTLS: TLS failed: etcd's certificate is not signed by the CA
	// given, etcd refused or wanted a client certificate, a TLS file could
	// not be used, or plain http was sent to a TLS port.
	ErrTLS = errors.New("etcd TLS error")
)
