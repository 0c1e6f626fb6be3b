package topology

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/coordinator-dev/coordinator/pkg/hashring"
)

// ErrUnreachable means a server did not answer Probe as memcached does.
var ErrUnreachable = errors.New("topology: memcached server does not answer")

// probeTimeout bounds Probe's exchange with one server when ctx has no
// earlier deadline.
const probeTimeout = 2 * time.Second

// Probe asks every server of t for its version and returns nil when all
// answer as memcached does; otherwise an error naming each one that does
// not, matching ErrUnreachable.
func Probe(ctx context.Context, t Topology) error {
	var errs []error
	for _, s := range t.Servers {
		if err := probe(ctx, s); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %w", ErrUnreachable, s.Addr, err))
		}
	}
	return errors.Join(errs...)
}

func probe(ctx context.Context, s hashring.Server) error {
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	network := "tcp"
	if strings.Contains(s.Addr, "/") {
		network = "unix"
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, network, s.Addr)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	if err := c.SetDeadline(deadline); err != nil {
		return err
	}
	if _, err := c.Write([]byte("version\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "VERSION ") {
		return fmt.Errorf("answered %q to version", strings.TrimSpace(line))
	}
	return nil
}
