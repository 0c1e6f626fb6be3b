// Package rbac is the least etcd access each part of the coordinator needs,
// as etcd role permissions over the keys of one namespace (package
// keyspace), so that an operator can enable etcd's auth and give every
// process only what it needs.
//
// A node reads and writes the whole namespace: it applies every caller's
// batches, deletes them once applied, and keeps the applied watermark, the
// term, the election and the quarantine. A caller reads and writes only its
// own name's keys (its registration, its batches, its receipts) and reads
// the applied watermark; etcd's access control then refuses it any write
// under another name, and the refused transaction stores nothing. A reader
// (the status, registrations and ops commands) reads the namespace.
//
// etcd's auth has to be enabled by an operator (etcdctl auth enable, after
// creating the root user); Grant only creates roles and their permissions.
package rbac

import (
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/coordinator-dev/coordinator/pkg/keyspace"
)

// Access is what a permission allows.
type Access int

// Accesses, as etcd names them.
const (
	// Read allows range reads and watches.
	Read Access = iota
	// Write allows puts and deletes.
	Write
	// ReadWrite allows both.
	ReadWrite
)

// String returns etcdctl's name of the access: read, write or readwrite.
func (a Access) String() string {
	switch a {
	case Read:
		return "read"
	case Write:
		return "write"
	case ReadWrite:
		return "readwrite"
	}
	return fmt.Sprintf("Access(%d)", int(a))
}

func (a Access) etcd() clientv3.PermissionType {
	switch a {
	case Read:
		return clientv3.PermissionType(clientv3.PermRead)
	case Write:
		return clientv3.PermissionType(clientv3.PermWrite)
	}
	return clientv3.PermissionType(clientv3.PermReadWrite)
}

// Permission is one key, or every key under a prefix, with an access.
type Permission struct {
	// Key is the key, or the prefix when Prefix is set.
	Key string
	// Prefix makes the permission cover every key starting with Key.
	Prefix bool
	// Access is what the permission allows.
	Access Access
}

// rangeEnd is etcd's end of the permission's range: empty for one key.
func (p Permission) rangeEnd() string {
	if p.Prefix {
		return keyspace.PrefixEnd(p.Key)
	}
	return ""
}

// NodePermissions is what a coordinator node needs: the whole namespace,
// read and write.
func NodePermissions(layout keyspace.Layout) []Permission {
	return []Permission{{Key: layout.Prefix(), Prefix: true, Access: ReadWrite}}
}

// CallerPermissions is what a caller registering and submitting as name
// needs, and no more: its registration, its batches and its receipts, read
// and write, and the applied watermark, read (to wait until a token is
// applied).
func CallerPermissions(layout keyspace.Layout, name string) []Permission {
	return []Permission{
		{Key: layout.Reg(name), Access: ReadWrite},
		{Key: layout.NameOpsPrefix(name), Prefix: true, Access: ReadWrite},
		{Key: layout.NameReceiptsPrefix(name), Prefix: true, Access: ReadWrite},
		{Key: layout.Applied(), Access: Read},
	}
}

// ReaderPermissions is what the status, registrations and ops commands
// need: the namespace, read only.
func ReaderPermissions(layout keyspace.Layout) []Permission {
	return []Permission{{Key: layout.Prefix(), Prefix: true, Access: Read}}
}

// Grant creates role, unless it exists, and grants it perms. It needs a
// client authenticated as a user allowed to manage roles (root).
func Grant(ctx context.Context, cli *clientv3.Client, role string, perms []Permission) error {
	if _, err := cli.RoleGet(ctx, role); err != nil {
		if _, err := cli.RoleAdd(ctx, role); err != nil {
			return fmt.Errorf("rbac: add role %q: %w", role, err)
		}
	}
	for _, p := range perms {
		if _, err := cli.RoleGrantPermission(ctx, role, p.Key, p.rangeEnd(), p.Access.etcd()); err != nil {
			return fmt.Errorf("rbac: grant role %q %s on %q: %w", role, p.Access, p.Key, err)
		}
	}
	return nil
}

// EtcdctlCommands returns the etcdctl commands that create role with
// perms, one a line.
func EtcdctlCommands(role string, perms []Permission) []string {
	cmds := []string{"etcdctl role add " + role}
	for _, p := range perms {
		var b strings.Builder
		b.WriteString("etcdctl role grant-permission ")
		if p.Prefix {
			b.WriteString("--prefix=true ")
		}
		fmt.Fprintf(&b, "%s %s %s", role, p.Access, shellQuote(p.Key))
		cmds = append(cmds, b.String())
	}
	return cmds
}

// shellQuote quotes s for a POSIX shell when it holds anything but safe
// characters.
func shellQuote(s string) string {
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._-:", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
