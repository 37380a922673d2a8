package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/kayadb/kayadb/internal/vfs"
)

// Member is one node of the cluster.
type Member struct {
	ID         uint64 `json:"id"`
	RaftAddr   string `json:"raft_addr"`
	ClientAddr string `json:"client_addr"`
	Learner    bool   `json:"learner,omitempty"`
}

// ParsePeer parses a --peer value: ID=RAFT_ADDR,CLIENT_ADDR, or ID=RAFT_ADDR
// as the original KayaDB accepts it, whose client address is then the raft
// address.
func ParsePeer(s string) (Member, error) {
	m, _, err := parsePeer(s)
	return m, err
}

// parsePeer is ParsePeer that also tells whether the value named a client
// address (clientGiven false: m.ClientAddr is the raft address).
func parsePeer(s string) (m Member, clientGiven bool, err error) {
	id, addrs, ok := strings.Cut(s, "=")
	if !ok {
		return Member{}, false, fmt.Errorf("--peer %q: want ID=RAFT_ADDR,CLIENT_ADDR (for example 2=127.0.0.1:7482,127.0.0.1:7380)", s)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(id), 10, 64)
	if err != nil || n == 0 {
		return Member{}, false, fmt.Errorf("--peer %q: the node id must be a positive integer", s)
	}
	raft, client, clientGiven := strings.Cut(addrs, ",")
	if raft == "" || clientGiven && client == "" {
		return Member{}, false, fmt.Errorf("--peer %q: want ID=RAFT_ADDR,CLIENT_ADDR (or ID=RAFT_ADDR alone, whose clients are then sent to RAFT_ADDR)", s)
	}
	if !clientGiven {
		client = raft
	}
	m = Member{ID: n, RaftAddr: strings.TrimSpace(raft), ClientAddr: strings.TrimSpace(client)}
	for _, a := range []struct{ field, addr string }{{"raft address", m.RaftAddr}, {"client address", m.ClientAddr}} {
		if err := checkHostPort(a.field, a.addr, false); err != nil {
			return Member{}, false, fmt.Errorf("--peer %q: %w", s, err)
		}
	}
	return m, clientGiven, nil
}

// roster is the membership as this node knows it. It is part of the
// replicated state (membership changes go through raft) and is persisted in
// DIR/cluster-roster.json so a restarted node knows its peers' addresses.
type roster struct {
	path string
	fs   vfs.FS
	dir  string

	mu      sync.Mutex
	members map[uint64]Member
	removed map[uint64]bool // ids are never reused after removal
}

type rosterFile struct {
	Members []Member `json:"members"`
	Removed []uint64 `json:"removed,omitempty"`
}

func loadRoster(fs vfs.FS, dir string) (*roster, bool, error) {
	r := &roster{path: filepath.Join(dir, "cluster-roster.json"), fs: fs, dir: dir,
		members: map[uint64]Member{}, removed: map[uint64]bool{}}
	f, err := fs.Open(r.path)
	if errors.Is(err, os.ErrNotExist) {
		return r, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", r.path, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16<<20))
	if err != nil {
		return nil, false, fmt.Errorf("reading %s: %w", r.path, err)
	}
	var rf rosterFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return nil, false, fmt.Errorf("%s is damaged (%v); restore it from a backup or rebuild it from the other members' copy", r.path, err)
	}
	for _, m := range rf.Members {
		r.members[m.ID] = m
	}
	for _, id := range rf.Removed {
		r.removed[id] = true
	}
	return r, true, nil
}

// encodeLocked returns the roster as JSON (the format of
// cluster-roster.json and of the engine's roster key). Called with mu held.
func (r *roster) encodeLocked() []byte {
	var rf rosterFile
	for _, m := range r.members {
		rf.Members = append(rf.Members, m)
	}
	sort.Slice(rf.Members, func(i, j int) bool { return rf.Members[i].ID < rf.Members[j].ID })
	for id := range r.removed {
		rf.Removed = append(rf.Removed, id)
	}
	sort.Slice(rf.Removed, func(i, j int) bool { return rf.Removed[i] < rf.Removed[j] })
	b, _ := json.MarshalIndent(rf, "", "  ")
	return append(b, '\n')
}

// saveLocked writes the roster crash-safely (temp file, fsync, rename, dir
// fsync). Called with mu held.
func (r *roster) saveLocked() error {
	return vfs.WriteFileSync(r.fs, r.dir, r.path, r.encodeLocked())
}

func (r *roster) encode() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.encodeLocked()
}

// replace loads the roster from its JSON encoding (a snapshot's copy) and
// saves it.
func (r *roster) replace(b []byte) error {
	var rf rosterFile
	if err := json.Unmarshal(b, &rf); err != nil {
		return fmt.Errorf("the roster in the snapshot does not decode: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = map[uint64]Member{}
	for _, m := range rf.Members {
		r.members[m.ID] = m
	}
	r.removed = map[uint64]bool{}
	for _, id := range rf.Removed {
		r.removed[id] = true
	}
	return r.saveLocked()
}

// apply changes the roster for one applied configuration change and saves
// it. add is nil for removals.
func (r *roster) applyChange(id uint64, add *Member, remove bool, learner bool) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case remove:
		delete(r.members, id)
		r.removed[id] = true
	case add != nil:
		m := *add
		m.Learner = learner
		r.members[id] = m
	default:
		m, ok := r.members[id]
		if !ok {
			return nil
		}
		m.Learner = learner
		r.members[id] = m
	}
	return r.saveLocked()
}

func (r *roster) isRemoved(id uint64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.removed[id]
}

// setUnsaved sets the members without writing the file (save does): a
// new node's roster from its flags is written only once it has started.
func (r *roster) setUnsaved(members []Member) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = map[uint64]Member{}
	for _, m := range members {
		r.members[m.ID] = m
	}
}

// save writes the roster (cluster-roster.json) crash-safely.
func (r *roster) save() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.saveLocked()
}

func (r *roster) get(id uint64) (Member, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.members[id]
	return m, ok
}

func (r *roster) list() []Member {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (r *roster) raftAddrs() map[uint64]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[uint64]string{}
	for id, m := range r.members {
		out[id] = m.RaftAddr
	}
	return out
}
