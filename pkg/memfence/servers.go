package memfence

import (
	"errors"
	"net"
)

// ServerError is the failure of a read or write at one memcached server.
// The errors of Set, Delete, WriteFrom, each error of WriteAll, and the
// error of Read (one per server that failed, joined) are ServerErrors, for
// errors.As or ServerErrors to find which server failed; errors.Is still
// finds ErrFenced, ErrRejected, ErrContended, a context's error or the
// network's through it.
type ServerError struct {
	// Server is the server's address as configured: an entry of
	// Config.Servers, or the name a Selector that is a ServerNamer gives
	// it; otherwise the address's String.
	Server string
	// Err is what failed.
	Err error
}

// Error returns the error's text, after the server's address.
func (e *ServerError) Error() string { return "memcached " + e.Server + ": " + e.Err.Error() }

// Unwrap returns Err.
func (e *ServerError) Unwrap() error { return e.Err }

// ServerErrors returns the ServerErrors err holds: one for an error of one
// server, one per server for a Read that failed at several (errors.Join),
// none for an error that names no server.
func ServerErrors(err error) []*ServerError {
	var out []*ServerError
	var walk func(error)
	walk = func(err error) {
		for err != nil {
			if se, ok := err.(*ServerError); ok {
				out = append(out, se)
				return
			}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				for _, e := range j.Unwrap() {
					walk(e)
				}
				return
			}
			err = errors.Unwrap(err)
		}
	}
	walk(err)
	return out
}

// ServerNamer is implemented by a Config.Selector that knows the address
// each of its servers was configured by ("host:port" as given, before it
// was resolved), so that ServerError, ServerStats and Stats name the
// server as configured, the name health probes and metrics use.
type ServerNamer interface {
	// ServerName returns the configured address of addr, one of the
	// selector's addresses, or "" when it does not know addr.
	ServerName(addr net.Addr) string
}

// listNames names the servers of Config.Servers: the configured address
// by the resolved one.
type listNames map[string]string

// ServerName returns the configured address of addr.
func (n listNames) ServerName(addr net.Addr) string { return n[addr.String()] }

// serverName returns the name of the server at addr (see ServerError.Server).
func (w *Writer) serverName(addr net.Addr) string {
	if w.names != nil {
		if n := w.names.ServerName(addr); n != "" {
			return n
		}
	}
	return addr.String()
}

// atServer returns err, when not nil, as the error of key's server. It is
// called on the failure path only.
func (w *Writer) atServer(key string, err error) error {
	if err == nil {
		return nil
	}
	if se := (*ServerError)(nil); errors.As(err, &se) {
		return err
	}
	addr, perr := w.servers.PickServer(key)
	if perr != nil {
		return err
	}
	return &ServerError{Server: w.serverName(addr), Err: err}
}
