package etcdconn

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// healthKey is the key Dial reads, as etcdctl's endpoint health does.
const healthKey = "health"

// Dial connects to etcd and checks that it answers within the dial
// timeout: a read of one key, which also proves the credentials (a denied
// read of that key still counts as an answer, as it does for etcdctl's
// endpoint health, since a user needs no permission beyond its own keys).
// It closes the client on failure. The client's Context is ctx: its
// calls end when ctx does. An invalid c returns its Validate error; a failure to reach etcd wraps ErrUnreachable, ErrAuth or ErrTLS
// and the cause, and never holds the password.
func Dial(ctx context.Context, c Config) (*clientv3.Client, error) {
	cc, err := c.ClientConfig()
	if err != nil {
		return nil, err
	}
	cc.Context = ctx
	where := strings.Join(c.Endpoints, ",")
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, classify(ctx, c, cc.TLS, where, err)
	}
	sctx, cancel := context.WithTimeout(ctx, cc.DialTimeout)
	defer cancel()
	if _, err := cli.Get(sctx, healthKey); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		cli.Close()
		return nil, classify(ctx, c, cc.TLS, where, err)
	}
	return cli, nil
}

// authErrors are etcd's refusals of a user.
var authErrors = []error{
	rpctypes.ErrAuthFailed, rpctypes.ErrUserEmpty, rpctypes.ErrUserNotFound,
	rpctypes.ErrInvalidAuthToken, rpctypes.ErrAuthOldRevision, rpctypes.ErrPermissionDenied,
}

// tlsMarks are the words of the TLS failures gRPC reports as text only.
var tlsMarks = []string{"x509:", "tls:", "authentication handshake failed", "certificate"}

// classify wraps err in the sentinel that says what went wrong. gRPC
// reports a failed handshake as a dial that timed out, so for a TLS
// connection classify makes one handshake of its own to find the cause.
func classify(ctx context.Context, c Config, tc *tls.Config, where string, err error) error {
	err = rpctypes.Error(err)
	for _, a := range authErrors {
		if errors.Is(err, a) {
			return fmt.Errorf("%w: etcd at %s refused user %q: %w", ErrAuth, where, userOf(c), err)
		}
	}
	msg := err.Error()
	for _, m := range tlsMarks {
		if strings.Contains(msg, m) {
			return fmt.Errorf("%w: etcd at %s: %w", ErrTLS, where, err)
		}
	}
	if tc != nil {
		if herr := handshake(ctx, c.Endpoints, tc, cmp.Or(c.DialTimeout, DefaultDialTimeout)); herr != nil {
			hint := ""
			var unknown x509.UnknownAuthorityError
			if errors.As(herr, &unknown) && c.Security.CACert == "" {
				hint = " (no CACert is given: the server's certificate was checked against the system's roots)"
			}
			return fmt.Errorf("%w: etcd at %s: %w%s (%w)", ErrTLS, where, herr, hint, err)
		}
	}
	if ep, ok := speaksTLS(ctx, c); ok {
		return fmt.Errorf("%w: etcd at %s does not answer over plain http: %s serves TLS: "+
			"use an https:// endpoint and the CA of its certificate: %w", ErrTLS, where, ep, err)
	}
	return fmt.Errorf("%w: etcd at %s does not answer: %w", ErrUnreachable, where, err)
}

func userOf(c Config) string {
	if c.Security.Username != "" {
		return c.Security.Username
	}
	return "(none; certificate common name)"
}

// speaksTLS reports the first plain endpoint of c that completes a TLS
// handshake: a plain connection to a TLS port is cut without a word gRPC
// could report, and a handshake is what tells.
func speaksTLS(ctx context.Context, c Config) (string, bool) {
	if c.secure() {
		return "", false
	}
	for _, ep := range c.Endpoints {
		host := hostOf(ep)
		d := tls.Dialer{
			NetDialer: &net.Dialer{Timeout: time.Second},
			// Only whether the peer speaks TLS matters here, not who it is.
			Config: &tls.Config{InsecureSkipVerify: true}, //nolint:gosec
		}
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		conn, err := d.DialContext(hctx, "tcp", host)
		cancel()
		if err == nil {
			conn.Close()
			return ep, true
		}
		var alert tls.AlertError
		if errors.As(err, &alert) {
			// A TLS server refusing this client's empty certificate.
			return ep, true
		}
	}
	return "", false
}

// probeTimeout bounds the read that waits for a server's refusal after a
// diagnostic handshake: a server that accepts the client says nothing, so
// the read always runs this long then.
const probeTimeout = time.Second

// handshake makes a TLS handshake with tc to each endpoint and returns the
// first TLS failure: an unverifiable server certificate, or the server's
// refusal of the client's certificate. etcd refuses a client certificate
// after the client's side of a TLS 1.3 handshake is done, so a short read
// follows the handshake to receive that refusal; a server that accepts
// waits for the client to speak and the read times out. The dial and
// handshake are bounded by dialTimeout, the connection's own: a busy or
// briefly paused server must not turn a certificate refusal into
// "unreachable".
func handshake(ctx context.Context, endpoints []string, tc *tls.Config, dialTimeout time.Duration) error {
	for _, ep := range endpoints {
		host := hostOf(ep)
		cfg := tc.Clone()
		if cfg.ServerName == "" {
			if h, _, err := net.SplitHostPort(host); err == nil {
				cfg.ServerName = h
			}
		}
		cfg.NextProtos = []string{"h2"}
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: dialTimeout}, Config: cfg}
		hctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), dialTimeout)
		conn, err := d.DialContext(hctx, "tcp", host)
		cancel()
		if err != nil {
			if isTLSError(err) {
				return err
			}
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(probeTimeout))
		_, err = conn.Read(make([]byte, 1))
		conn.Close()
		if err != nil && isTLSError(err) {
			return err
		}
	}
	return nil
}

// isTLSError reports whether err is a certificate or TLS protocol failure
// rather than a network one.
func isTLSError(err error) bool {
	var (
		alert   tls.AlertError
		verify  *tls.CertificateVerificationError
		record  tls.RecordHeaderError
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
	)
	// crypto/tls reports an alert from the peer as an unexported type
	// whose text starts so.
	return errors.As(err, &alert) || errors.As(err, &verify) || errors.As(err, &record) ||
		errors.As(err, &unknown) || errors.As(err, &host) || errors.As(err, &invalid) ||
		strings.Contains(err.Error(), "remote error: tls:")
}

// hostOf returns the host:port of an endpoint.
func hostOf(ep string) string {
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		return u.Host
	}
	return ep
}
