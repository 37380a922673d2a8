package client

import (
	"bytes"
	"context"
	"fmt"

	"github.com/kayadb/kayadb/internal/wire"
)

// ReadOption modifies a read (Get, GetWithRevision, Scan, ScanPage).
type ReadOption func(*readOptions)

type readOptions struct {
	at        uint64 // revision to read at; 0 = the latest
	revisions bool   // the caller wants mod revisions
}

// WithReadAt makes a read return what the store held at revision rev (a
// revision is a commit timestamp: Commit, RunTxn and conditional writes
// return them, and every value read with a revision carries its
// ModRevision). rev 0 means the latest, read linearizably. A revision older
// than the server's retained history (--mvcc-retention) is an error
// matching ErrCompacted; one newer than the newest revision is
// ErrInvalidArgument. Reads at a revision use GET_AT and SCAN_AT (opcodes
// 69, 70); a server without them answers ErrUnsupported.
func WithReadAt(rev uint64) ReadOption {
	return func(o *readOptions) { o.at, o.revisions = rev, true }
}

// WithModRevisions makes Scan read the latest values with their mod
// revisions (KV.ModRevision), through SCAN_AT.
func WithModRevisions() ReadOption {
	return func(o *readOptions) { o.revisions = true }
}

func readOpts(opts []ReadOption) readOptions {
	var o readOptions
	for _, f := range opts {
		if f != nil {
			f(&o)
		}
	}
	return o
}

// GetWithRevision returns the value of key and its mod revision (the
// revision of the write that gave it this value), linearizably, or at the
// revision of WithReadAt. A missing key is ErrNotFound. It uses GET_AT
// (opcode 69); a server without it answers ErrUnsupported.
func (c *Client) GetWithRevision(ctx context.Context, key []byte, opts ...ReadOption) (value []byte, modRev uint64, err error) {
	if err := checkKey("key", key); err != nil {
		return nil, 0, err
	}
	o := readOpts(opts)
	a, err := c.do(ctx, request{op: wire.OpGetAt, inner: wire.AppendGetAt(nil, o.at, key), leaderOnly: true})
	if err != nil {
		return nil, 0, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, 0, unsupported(wire.OpGetAt, err)
	}
	v, rev, err := wire.DecodeGetAtReply(a.payload)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: GET_AT reply from %s: %w", ErrProtocol, a.addr, err)
	}
	return v, rev, nil
}

// ScanPage is one page of a scan.
type ScanPage struct {
	// KVs are the pairs of the page, in ascending key order, each with its
	// ModRevision.
	KVs []KV
	// Revision is the revision the page was read at: pass it to
	// WithReadAt to read the next page of the same snapshot.
	Revision uint64
	// More is true when keys under the prefix remain after the last one.
	More bool
	// Next is where the next page starts (the last key followed by a 0x00
	// byte) when More is set, else nil.
	Next []byte
}

// ScanPage reads the pairs whose keys begin with prefix, from start
// (inclusive; nil = from the prefix; otherwise it must begin with prefix),
// at most limit of them (0 = the server's cap, 100,000 items or 64 MiB),
// linearizably or at the revision of WithReadAt. To read a whole prefix at
// one revision, page by page:
//
//	page, err := c.ScanPage(ctx, prefix, nil, 1000)
//	for err == nil && page.More {
//		page, err = c.ScanPage(ctx, prefix, page.Next, 1000, client.WithReadAt(page.Revision))
//	}
//
// It uses SCAN_AT (opcode 70); a server without it answers ErrUnsupported.
func (c *Client) ScanPage(ctx context.Context, prefix, start []byte, limit int, opts ...ReadOption) (*ScanPage, error) {
	if err := checkKey("prefix", prefix); err != nil {
		return nil, err
	}
	// A start may be one byte longer than a key: the last key of a page
	// followed by 0x00.
	if len(start) > wire.MaxKeySize+1 {
		return nil, fmt.Errorf("%w: scan start is %d bytes, the limit is %d", ErrInvalidArgument, len(start), wire.MaxKeySize+1)
	}
	if len(start) > 0 && !bytes.HasPrefix(start, prefix) {
		return nil, fmt.Errorf("%w: scan start %q does not begin with the prefix %q", ErrInvalidArgument, start, prefix)
	}
	if limit < 0 || int64(limit) > int64(^uint32(0)) {
		return nil, fmt.Errorf("%w: scan limit %d out of range (0 = the server's cap)", ErrInvalidArgument, limit)
	}
	o := readOpts(opts)
	req := wire.ScanAt{ReadTS: o.at, Prefix: prefix, Start: start, Limit: uint32(limit)}
	a, err := c.do(ctx, request{op: wire.OpScanAt, inner: wire.AppendScanAt(nil, req), leaderOnly: true})
	if err != nil {
		return nil, err
	}
	if err := statusError(a.st, a.payload); err != nil {
		return nil, unsupported(wire.OpScanAt, err)
	}
	r, err := wire.DecodeScanAtReply(a.payload)
	if err != nil {
		return nil, fmt.Errorf("%w: SCAN_AT reply from %s: %w", ErrProtocol, a.addr, err)
	}
	if o.at != 0 && r.ReadRev != o.at {
		return nil, fmt.Errorf("%w: SCAN_AT reply from %s read at revision %d, asked for %d", ErrProtocol, a.addr, r.ReadRev, o.at)
	}
	page := &ScanPage{KVs: make([]KV, len(r.Items)), Revision: r.ReadRev, More: r.More}
	for i, it := range r.Items {
		if !bytes.HasPrefix(it.Key, prefix) || bytes.Compare(it.Key, start) < 0 || (i > 0 && bytes.Compare(it.Key, r.Items[i-1].Key) <= 0) {
			return nil, fmt.Errorf("%w: SCAN_AT reply from %s: key %q out of order or outside the prefix", ErrProtocol, a.addr, it.Key)
		}
		page.KVs[i] = KV{Key: it.Key, Value: it.Value, ModRevision: it.ModRev}
	}
	if limit > 0 && len(page.KVs) > limit {
		return nil, fmt.Errorf("%w: SCAN_AT reply from %s has %d items, asked for at most %d", ErrProtocol, a.addr, len(page.KVs), limit)
	}
	if r.More {
		if len(page.KVs) == 0 {
			return nil, fmt.Errorf("%w: SCAN_AT reply from %s says more keys remain but returned none", ErrProtocol, a.addr)
		}
		last := page.KVs[len(page.KVs)-1].Key
		page.Next = append(append(make([]byte, 0, len(last)+1), last...), 0)
	}
	return page, nil
}
