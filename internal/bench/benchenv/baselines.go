package benchenv

import (
	"context"
	"strconv"
)

// scratchDir sorts after every key of the coordinator's layout.
const scratchDir = "~bench/"

// Scratch is the etcd key name of the baselines' own keys (raw puts,
// guards, mutexes, the lease-based leader). They live in the run's
// namespace, so that they go with it, but after every key of the
// coordinator's layout: the node's watches (a standby's runs from the
// watermark key to the end of the ops range) never see the baselines'
// writes, which would cost the node and etcd work while a baseline runs,
// and a new leader catching up would be sent all of them.
func (e *Env) Scratch(name string) string { return e.Layout.Prefix() + scratchDir + name }

// RawPrefix begins the Scratch names of the raw etcd put baseline's keys.
const RawPrefix = "raw/"

// RawKey is the etcd key of operation i of worker w of a baseline that
// writes etcd directly.
func (e *Env) RawKey(w, i int) string {
	return e.Scratch(RawPrefix + strconv.Itoa(KeyIndex(w, i, e.cfg.Keys)))
}

// EtcdPut is the raw etcd put baseline: operation i of worker w puts Value
// at RawKey(w, i).
func (e *Env) EtcdPut(ctx context.Context, w, i int) error {
	_, err := e.Etcd.Put(ctx, e.RawKey(w, i), string(e.Value))
	return err
}
