package cluster

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/coordinator-dev/coordinator/integration/cluster/proxy"
)

// Every member listens for its peers on PeerAddr but advertises the address
// of its PeerLink, a proxy in front of PeerAddr, so every connection a
// member dials to another goes through the other's PeerLink. The proxy
// names the dialling member of each connection (by the process that owns
// its socket), so a cut can be one member to another, in one direction:
// raft messages from a to b travel up a's connections to b (pipeline,
// snapshots) and down b's connections to a (the streams b reads from a).

// CutPeer stops the peer traffic from member from to member to; the other
// direction and every other link stay up. HealPeers lifts it.
func (c *Cluster) CutPeer(from, to *Member) {
	to.PeerLink.Cut(from.Name, proxy.Up)
	from.PeerLink.Cut(to.Name, proxy.Down)
}

// IsolateMember cuts m off from every other member, both ways, while the
// clients still reach it (a minority partition of one).
func (c *Cluster) IsolateMember(m *Member) {
	for _, o := range c.Members {
		if o != m {
			c.CutPeer(m, o)
			c.CutPeer(o, m)
		}
	}
}

// HealPeers lifts every cut between members; what the proxies held is
// delivered.
func (c *Cluster) HealPeers() {
	for _, m := range c.Members {
		m.PeerLink.Heal()
	}
}

// ShapePeers slows every link between members down, in both directions.
func (c *Cluster) ShapePeers(s proxy.Shape) {
	for _, m := range c.Members {
		m.PeerLink.SetShape(proxy.Both, s)
	}
}

// newPeerLink starts the proxy in front of m's peer port.
func (c *Cluster) newPeerLink(m *Member) (*proxy.Proxy, error) {
	return proxy.Start(proxy.Config{Target: m.PeerAddr, Identify: c.dialler})
}

// dialler names the member whose process dialled conn, "" when none did.
func (c *Cluster) dialler(conn net.Conn) string {
	c.procMu.Lock()
	procs := make(map[string]int, len(c.Members))
	for _, m := range c.Members {
		if m.Proc != nil && Running(m.Proc) {
			procs[m.Name] = m.Proc.Pid()
		}
	}
	c.procMu.Unlock()
	return owner(conn, procs)
}

// nodeDialler names the node whose process dialled conn, "" when none did.
func (c *Cluster) nodeDialler(conn net.Conn) string {
	c.procMu.Lock()
	procs := make(map[string]int, len(c.Nodes))
	for _, n := range c.Nodes {
		if Running(n.Process) {
			procs[n.ID] = n.Pid()
		}
	}
	c.procMu.Unlock()
	return owner(conn, procs)
}

// owner names the process of procs (name to pid) that holds the dialling
// end of conn, a connection accepted on loopback.
func owner(conn net.Conn, procs map[string]int) string {
	inode, err := socketInode(conn.RemoteAddr().String(), conn.LocalAddr().String())
	if err != nil || inode == "" {
		return ""
	}
	for name, pid := range procs {
		if ownsSocket(pid, inode) {
			return name
		}
	}
	return ""
}

// socketInode finds, in /proc/net/tcp, the inode of the IPv4 socket whose
// local address is local and whose remote address is remote: the dialler's
// end of a loopback connection.
func socketInode(local, remote string) (string, error) {
	l, err := procAddr(local)
	if err != nil {
		return "", err
	}
	r, err := procAddr(remote)
	if err != nil {
		return "", err
	}
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) > 9 && fs[1] == l && fs[2] == r {
			return fs[9], nil
		}
	}
	return "", sc.Err()
}

// procAddr formats an IPv4 host:port as /proc/net/tcp does (the address's
// bytes little-endian in hex, then the port in hex).
func procAddr(hostport string) (string, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return "", err
	}
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return "", fmt.Errorf("%s is not IPv4", hostport)
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%02X%02X%02X%02X:%04X", ip[3], ip[2], ip[1], ip[0], p), nil
}

// ownsSocket reports whether process pid has the socket inode open.
func ownsSocket(pid int, inode string) bool {
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return false
	}
	want := "socket:[" + inode + "]"
	for _, e := range ents {
		if l, err := os.Readlink(dir + "/" + e.Name()); err == nil && l == want {
			return true
		}
	}
	return false
}
