package acl

import (
	"context"
	"net/netip"
	"time"
)

// Sink is a copy of the blocklist kept elsewhere: an XDP map, an nftables
// set. Add is an upsert, Remove is idempotent, Sync makes the sink hold
// exactly the given entries.
type Sink interface {
	Sync(entries []Entry) error
	Add(e Entry) error
	Remove(p netip.Prefix) error
}

// Mirror keeps sink equal to the blocklist until ctx ends or the
// blocklist closes: the current entries first, then every change. When
// the feed overflows (OpResync) or the sink fails, the whole list is
// synced again; a failing sink is retried with backoff (up to 5 s) and
// each error is passed to onErr (which may be nil).
func Mirror(ctx context.Context, b *Blocklist, sink Sink, onErr func(error)) {
	sub, snap := b.Subscribe(0)
	defer sub.Close()
	report := func(err error) {
		if err != nil && onErr != nil {
			onErr(err)
		}
	}
	backoff := 100 * time.Millisecond
	resync := func(entries []Entry) bool {
		for {
			err := sink.Sync(entries)
			if err == nil {
				backoff = 100 * time.Millisecond
				return true
			}
			report(err)
			select {
			case <-ctx.Done():
				return false
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
			entries = sub.Resync()
		}
	}
	if !resync(snap) {
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-sub.C():
			if !ok {
				return
			}
			var err error
			switch ch.Op {
			case OpAdd:
				err = sink.Add(ch.Entry)
			case OpRemove:
				err = sink.Remove(ch.Entry.Prefix)
			case OpResync:
				if !resync(sub.Resync()) {
					return
				}
				continue
			}
			if err != nil {
				report(err)
				if !resync(sub.Resync()) {
					return
				}
			}
		}
	}
}
