package etcdconn

import (
	"context"
	"crypto/tls"
	"errors"
	"net"

	"go.etcd.io/etcd/client/v3/credentials"
	grpccredentials "google.golang.org/grpc/credentials"

	"github.com/coordinator-dev/coordinator/pkg/tlsreload"
)

// Rotated TLS files.
//
// etcd's own TLS configuration (transport.TLSInfo's, which
// clientv3.NewClientConfig builds) reads the client certificate and key
// again at each handshake (its GetClientCertificate), so a rotated pair is
// what every new connection presents; but it reads the CA bundle once. So
// the client's connections are made with reloadingCreds: at each handshake,
// the configuration etcd built from the files as they are, built again by
// etcd when one of them changes or on tlsreload.ReloadAll (package
// tlsreload, as the caller API's TLSFiles). Connections already open keep
// the certificates they were made with; a reconnect (a member restarted, a
// connection dropped) presents the new ones and checks the server against
// the new CA bundle.

// reloadingCreds are gRPC transport credentials whose handshakes use the
// current configuration of files, as etcd's own credentials
// (credentials.NewTransportCredential) would use it.
type reloadingCreds struct {
	files *tlsreload.Files[*tls.Config]
}

// current returns etcd's credentials of the current configuration.
func (c *reloadingCreds) current() grpccredentials.TransportCredentials {
	return credentials.NewTransportCredential(c.files.Current())
}

// ClientHandshake makes the TLS handshake of a new connection.
func (c *reloadingCreds) ClientHandshake(ctx context.Context, authority string, conn net.Conn) (net.Conn, grpccredentials.AuthInfo, error) {
	return c.current().ClientHandshake(ctx, authority, conn)
}

// ServerHandshake fails: the credentials are a client's.
func (c *reloadingCreds) ServerHandshake(net.Conn) (net.Conn, grpccredentials.AuthInfo, error) {
	return nil, nil, errors.New("etcdconn: client credentials cannot serve")
}

// Info describes the protocol: TLS.
func (c *reloadingCreds) Info() grpccredentials.ProtocolInfo { return c.current().Info() }

// Clone returns credentials of the same files.
func (c *reloadingCreds) Clone() grpccredentials.TransportCredentials {
	return &reloadingCreds{files: c.files}
}

// OverrideServerName is gRPC's deprecated way to set the server name; the
// name comes from the endpoints here, so it does nothing.
func (c *reloadingCreds) OverrideServerName(string) error { return nil }
