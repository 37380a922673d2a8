package wire

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
)

// Stats is the JSON document of a STATS OK payload (raw UTF-8, no length):
//
//	{"role":"leader|follower|candidate","term":N,"commit_index":N,
//	 "applied_index":N,"peer_count":N,"raft_groups":N,"engine":{...}}
//
// Fields may be added to the document but never removed or renamed, so
// decoding keeps members it does not know in Extra, and encoding writes
// them back after the known ones.
type Stats struct {
	// Role is "leader", "follower" or "candidate" (of group 0).
	Role string `json:"role"`
	// Term is the current raft term.
	Term uint64 `json:"term"`
	// CommitIndex is the raft commit index.
	CommitIndex uint64 `json:"commit_index"`
	// AppliedIndex is the index applied to the state machine.
	AppliedIndex uint64 `json:"applied_index"`
	// PeerCount is the number of other members.
	PeerCount uint64 `json:"peer_count"`
	// RaftGroups is the number of raft groups hosted.
	RaftGroups uint64 `json:"raft_groups"`
	// Engine holds the storage engine's counters.
	Engine EngineStats `json:"engine"`
	// Extra holds top-level members not listed above, as raw JSON.
	Extra map[string]json.RawMessage `json:"-"`
}

// EngineStats is the "engine" member of the STATS document.
type EngineStats struct {
	PutCount           uint64 `json:"put_count"`            // PUTs applied
	GetCount           uint64 `json:"get_count"`            // point reads
	DeleteCount        uint64 `json:"delete_count"`         // deletes applied
	ScanCount          uint64 `json:"scan_count"`           // scans
	WALBytesWritten    uint64 `json:"wal_bytes_written"`    // bytes appended to the WAL
	WALFsyncCount      uint64 `json:"wal_fsync_count"`      // WAL fsyncs
	WALFsyncTotalUs    uint64 `json:"wal_fsync_total_us"`   // time in WAL fsyncs, µs
	WALFsyncMaxUs      uint64 `json:"wal_fsync_max_us"`     // longest WAL fsync, µs
	MemtableEntries    uint64 `json:"memtable_entries"`     // entries in the memtable
	SSTableCount       uint64 `json:"sstable_count"`        // live SSTables
	LastSequence       uint64 `json:"last_sequence"`        // last sequence number
	FlushTotalUs       uint64 `json:"flush_total_us"`       // time in flushes, µs
	FlushMaxUs         uint64 `json:"flush_max_us"`         // longest flush, µs
	FlushCount         uint64 `json:"flush_count"`          // flushes
	CompactionTotalUs  uint64 `json:"compaction_total_us"`  // time in compactions, µs
	CompactionMaxUs    uint64 `json:"compaction_max_us"`    // longest compaction, µs
	CompactionCount    uint64 `json:"compaction_count"`     // compactions
	BlockCacheHits     uint64 `json:"block_cache_hits"`     // block cache hits
	BlockCacheMisses   uint64 `json:"block_cache_misses"`   // block cache misses
	RecoveryDurationUs uint64 `json:"recovery_duration_us"` // time to open, µs
	// Extra holds engine members not listed above, as raw JSON.
	Extra map[string]json.RawMessage `json:"-"`
}

// The aliases drop the methods, so that the known fields can be marshalled
// with encoding/json without recursion.
type (
	statsFields       Stats
	engineStatsFields EngineStats
)

var (
	statsKnown  = jsonNames(reflect.TypeFor[Stats]())
	engineKnown = jsonNames(reflect.TypeFor[EngineStats]())
)

// jsonNames lists the JSON member names of a struct's fields.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// MarshalJSON encodes s with its known members first, in declaration
// order, then the members of Extra (sorted) that do not collide with them.
func (s Stats) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(statsFields(s))
	if err != nil {
		return nil, err
	}
	return appendExtra(b, s.Extra, statsKnown)
}

// UnmarshalJSON decodes a STATS document, keeping unknown members in
// Extra.
func (s *Stats) UnmarshalJSON(data []byte) error {
	var f statsFields
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	extra, err := unknownMembers(data, statsKnown)
	if err != nil {
		return err
	}
	f.Extra = extra
	*s = Stats(f)
	return nil
}

// MarshalJSON encodes e with its known counters first, then the members
// of Extra (sorted) that do not collide with them.
func (e EngineStats) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(engineStatsFields(e))
	if err != nil {
		return nil, err
	}
	return appendExtra(b, e.Extra, engineKnown)
}

// UnmarshalJSON decodes the "engine" member, keeping unknown members in
// Extra.
func (e *EngineStats) UnmarshalJSON(data []byte) error {
	var f engineStatsFields
	if err := json.Unmarshal(data, &f); err != nil {
		return err
	}
	extra, err := unknownMembers(data, engineKnown)
	if err != nil {
		return err
	}
	f.Extra = extra
	*e = EngineStats(f)
	return nil
}

// appendExtra splices the extra members into the encoded object b.
func appendExtra(b []byte, extra map[string]json.RawMessage, known []string) ([]byte, error) {
	keys := make([]string, 0, len(extra))
	for k := range extra {
		if !slices.Contains(known, k) {
			keys = append(keys, k)
		}
	}
	if len(keys) == 0 {
		return b, nil
	}
	slices.Sort(keys)
	b = b[:len(b)-1] // drop '}'
	for _, k := range keys {
		name, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		var v bytes.Buffer
		if err := json.Compact(&v, extra[k]); err != nil {
			return nil, fmt.Errorf("wire: stats member %q: %w", k, err)
		}
		b = append(b, ',')
		b = append(b, name...)
		b = append(b, ':')
		b = append(b, v.Bytes()...)
	}
	return append(b, '}'), nil
}

// unknownMembers returns the members of the object data whose names are not
// in known, or nil when there are none.
func unknownMembers(data []byte, known []string) (map[string]json.RawMessage, error) {
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return nil, err
	}
	for _, k := range known {
		delete(all, k)
	}
	if len(all) == 0 {
		return nil, nil
	}
	return all, nil
}

// AppendStats appends a STATS OK payload: s as JSON.
func AppendStats(dst []byte, s *Stats) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return dst, fmt.Errorf("wire: encoding STATS: %w", err)
	}
	return append(dst, b...), nil
}

// DecodeStats decodes a STATS OK payload. Members it does not know are kept
// in Extra; a payload that is not a JSON object of the right shape is an
// error matching ErrMalformed.
func DecodeStats(p []byte) (*Stats, error) {
	if t := bytes.TrimLeft(p, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, fmt.Errorf("%w: STATS reply is not a JSON object", ErrMalformed)
	}
	var s Stats
	if err := json.Unmarshal(p, &s); err != nil {
		return nil, fmt.Errorf("%w: STATS reply: %w", ErrMalformed, err)
	}
	return &s, nil
}
