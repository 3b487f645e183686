package nft

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// unit is the smallest piece of work that must land in one kernel
// transaction. Elements in remove are first added (without a timeout) and
// then deleted: the add is a no-op when the element is present and
// re-creates it when the kernel has already expired it, so the delete
// cannot fail with ENOENT and abort the batch. Elements in add are added
// afterwards, so "remove then add" of the same element refreshes its
// timeout on every kernel (re-adding alone keeps the old timeout on older
// kernels; recent ones, such as 6.18, update it).
type unit struct {
	set    *nftables.Set
	remove []nftables.SetElement
	add    []nftables.SetElement
}

func (u unit) cost() int {
	n := 0
	for _, e := range u.remove {
		n += 2 * elemCost(e)
	}
	for _, e := range u.add {
		n += elemCost(e)
	}
	return n
}

// pack splits units into batches of at most limit bytes (a unit larger
// than that gets a batch of its own), keeping their order.
func pack(units []unit, limit int) [][]unit {
	var (
		out  [][]unit
		cur  []unit
		size int
	)
	for _, u := range units {
		c := u.cost()
		if len(cur) > 0 && size+c > limit {
			out = append(out, cur)
			cur, size = nil, 0
		}
		cur = append(cur, u)
		size += c
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	return out
}

// emit queues the messages of one batch on c: all pre-adds of removed
// elements, then all deletes, then all adds, set by set in first-seen
// order, in messages of at most maxMsgElems elements. Deletes before adds
// let a batch replace interval elements by overlapping ones, since the
// kernel checks overlaps against the transaction's next generation.
func emit(c *nftables.Conn, units []unit) error {
	var sets []*nftables.Set
	rem := map[*nftables.Set][]nftables.SetElement{}
	add := map[*nftables.Set][]nftables.SetElement{}
	for _, u := range units {
		if _, ok := rem[u.set]; !ok {
			if _, ok := add[u.set]; !ok {
				sets = append(sets, u.set)
			}
		}
		rem[u.set] = append(rem[u.set], u.remove...)
		add[u.set] = append(add[u.set], u.add...)
	}
	chunks := func(s *nftables.Set, els []nftables.SetElement, f func(*nftables.Set, []nftables.SetElement) error) error {
		for len(els) > 0 {
			n := min(len(els), maxMsgElems)
			if err := f(s, els[:n]); err != nil {
				return err
			}
			els = els[n:]
		}
		return nil
	}
	for _, s := range sets {
		if err := chunks(s, rem[s], c.SetAddElements); err != nil {
			return err
		}
	}
	for _, s := range sets {
		if err := chunks(s, rem[s], c.SetDeleteElements); err != nil {
			return err
		}
	}
	for _, s := range sets {
		if err := chunks(s, add[s], c.SetAddElements); err != nil {
			return err
		}
	}
	return nil
}

// conn returns a fresh nftables connection for one batch or query. A new
// Conn each time keeps no state between operations: the library's Conn
// remembers a marshalling error forever, and a failed batch could leave
// replies unread on a lasting socket.
func (f *Firewall) conn() (*nftables.Conn, error) {
	opts := []nftables.ConnOption{nftables.WithSockOptions(f.raiseSndBuf)}
	if f.opts.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(f.opts.NetNS))
	}
	return nftables.New(opts...)
}

// raiseSndBuf lets one netlink send carry a whole batch: the kernel refuses
// a message larger than the socket's send buffer (EMSGSIZE), about 200 KiB
// by default, or 5000 address elements. SO_SNDBUFFORCE needs CAP_NET_ADMIN
// in the initial user namespace; SO_SNDBUF (capped by net.core.wmem_max) is
// the fallback. The size obtained is remembered to size later batches.
func (f *Firewall) raiseSndBuf(c *netlink.Conn) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil // a test socket
	}
	var got int
	_ = rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, sndBufBytes) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, sndBufBytes)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF)
	})
	if got > 0 {
		f.sndBuf.Store(int64(got))
	}
	return nil
}

// batchLimit is the size of batches: maxBatchBytes, or less when the send
// buffer could not be raised (with room for the structure messages New
// sends and for the estimate being off).
func (f *Firewall) batchLimit() int {
	if f.maxBatch > 0 {
		return f.maxBatch
	}
	limit := maxBatchBytes
	if b := int(f.sndBuf.Load()); b > 0 {
		limit = min(limit, b/2)
	}
	return max(limit, 16<<10)
}

// run sends head (structure messages, may be nil) and units as one or more
// batches. Each batch is one kernel transaction: it applies entirely or not
// at all. what names the operation in errors.
func (f *Firewall) run(what string, head func(*nftables.Conn) error, units []unit) error {
	batches := pack(units, f.batchLimit())
	if head != nil && len(batches) == 0 {
		batches = [][]unit{nil}
	}
	for i, b := range batches {
		c, err := f.conn()
		if err != nil {
			return fmt.Errorf("nft: %s: %w", what, err)
		}
		if i == 0 && head != nil {
			if err := head(c); err != nil {
				return fmt.Errorf("nft: %s: %w", what, err)
			}
		}
		if err := emit(c, b); err != nil {
			return fmt.Errorf("nft: %s: %w", what, err)
		}
		if err := c.Flush(); err != nil {
			where := ""
			if len(batches) > 1 {
				where = fmt.Sprintf(" (batch %d of %d; earlier batches applied)", i+1, len(batches))
			}
			return fmt.Errorf("nft: %s%s: %w", what, where, explain(err))
		}
	}
	return nil
}

// explain adds what an errno means for this package's batches.
func explain(err error) error {
	switch {
	case errors.Is(err, unix.ENFILE):
		return fmt.Errorf("%w: set is at its size limit: %w", ErrFull, err)
	case errors.Is(err, unix.EEXIST):
		return fmt.Errorf("element overlaps one the firewall did not know about (Sync repairs): %w", err)
	case errors.Is(err, unix.EMSGSIZE):
		return fmt.Errorf("batch larger than the netlink send buffer: %w", err)
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("needs CAP_NET_ADMIN: %w", err)
	}
	return err
}
