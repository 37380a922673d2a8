package server

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/kv"
	"github.com/kayadb/kayadb/internal/vfs"
	"github.com/kayadb/kayadb/internal/wire"
)

// backupReady sends BACKUP_BEGIN (or STATUS) and then STATUS until the
// backup's checksums are known.
func backupReady(t *testing.T, cl *conn) *wire.BackupInfo {
	t.Helper()
	st, p, err := cl.do(wire.OpBackupBegin, nil)
	if err != nil || st != wire.StatusOK {
		t.Fatalf("BACKUP_BEGIN: %v %v %s", st, err, errText(p))
	}
	info, err := wire.DecodeBackupInfo(p)
	if err != nil {
		t.Fatal(err)
	}
	for !info.Ready {
		st, p, err := cl.do(wire.OpBackupStatus, wire.AppendBackupID(nil, info.ID))
		if err != nil || st != wire.StatusOK {
			t.Fatalf("BACKUP_STATUS: %v %v %s", st, err, errText(p))
		}
		if info, err = wire.DecodeBackupInfo(p); err != nil {
			t.Fatal(err)
		}
	}
	return info
}

func errText(p []byte) string {
	if msg, err := wire.DecodeError(p); err == nil {
		return msg
	}
	return fmt.Sprintf("%q", p)
}

// backupRead sends one BACKUP_READ.
func backupRead(cl *conn, id, file string, off uint64, n uint32) (wire.Status, []byte, string) {
	st, p, err := cl.do(wire.OpBackupRead, wire.AppendBackupRead(nil, wire.BackupRead{ID: id, File: file, Offset: off, Length: n}))
	if err != nil {
		return 0, nil, err.Error()
	}
	if st != wire.StatusOK {
		return st, nil, errText(p)
	}
	data, err := wire.DecodeBackupData(p)
	if err != nil {
		return st, nil, err.Error()
	}
	return st, data, ""
}

func readFileFS(t *testing.T, fs vfs.FS, path string) []byte {
	t.Helper()
	f, err := fs.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBackupProtocol takes a backup over the wire on a 3-node cluster:
// followers redirect BEGIN to the leader; the leader's checkpoint holds
// every acknowledged write, its files read back match their checksums and
// the files on the leader's disk; READ refuses unknown ids, bad names, bad
// offsets and lengths; END removes the files; at most maxBackups exist.
func TestBackupProtocol(t *testing.T) {
	c := newTestCluster(t, 3)
	lead := c.WaitLeader()
	cl := dial(t, c.addr(lead))
	for i := range 300 {
		if st, p, err := cl.put(fmt.Sprintf("k%04d", i), strings.Repeat("v", 500)); err != nil || st != wire.StatusOK {
			t.Fatalf("put: %v %v %s", st, err, errText(p))
		}
	}
	acked := c.node(lead).Store().AppliedIndex()

	// A follower answers NOT_LEADER with the leader's client address.
	follower := lead%3 + 1
	fc := dial(t, c.addr(follower))
	st, p, err := fc.do(wire.OpBackupBegin, nil)
	if err != nil || st != wire.StatusNotLeader || string(p) != c.addr(lead) {
		t.Fatalf("BEGIN on a follower: %v %v %q, want NOT_LEADER %s", st, err, p, c.addr(lead))
	}

	info := backupReady(t, cl)
	if !wire.ValidBackupID(info.ID) || info.NodeID != lead || info.AppliedIndex < acked || info.AppliedTerm == 0 || info.CreatedUnixMs == 0 {
		t.Fatalf("backup info %+v (acked index %d, leader %d)", info, acked, lead)
	}
	dir := filepath.Join("/node", backupsDir, info.ID+".tmp")
	disk := c.Disk(lead)
	var names []string
	for _, f := range info.Files {
		names = append(names, f.Name)
		// Read it back in small chunks; the bytes are the checkpoint's and
		// match the checksum.
		var got []byte
		for off := uint64(0); ; {
			st, data, msg := backupRead(cl, info.ID, f.Name, off, 4000)
			if st != wire.StatusOK {
				t.Fatalf("READ %s at %d: %v %s", f.Name, off, st, msg)
			}
			if len(data) == 0 {
				break
			}
			got = append(got, data...)
			off += uint64(len(data))
		}
		if uint64(len(got)) != f.Size || sha256.Sum256(got) != f.SHA256 {
			t.Fatalf("%s: %d bytes (listed %d), checksum match %v", f.Name, len(got), f.Size, sha256.Sum256(got) == f.SHA256)
		}
		if !bytes.Equal(got, readFileFS(t, disk, filepath.Join(dir, f.Name))) {
			t.Fatalf("%s: the bytes read differ from the checkpoint's", f.Name)
		}
	}
	joined := strings.Join(names, " ")
	if !strings.Contains(joined, "CURRENT") || !strings.Contains(joined, "MANIFEST-") || !strings.Contains(joined, ".sst") || strings.Contains(joined, "LOCK") {
		t.Fatalf("files: %s", joined)
	}

	// Refusals.
	f0 := info.Files[0]
	for _, tc := range []struct {
		id, file string
		off      uint64
		n        uint32
		want     string
	}{
		{"0123456789abcdef", f0.Name, 0, 10, "unknown backup id"},
		{"../../etc/passwd", f0.Name, 0, 10, "bad backup id"},
		{info.ID, "../" + f0.Name, 0, 10, "bad file name"},
		{info.ID, "/node/engine/CURRENT", 0, 10, "bad file name"},
		{info.ID, "LOCK", 0, 10, "bad file name"},
		{info.ID, "nosuch.sst", 0, 10, "bad file name"},
		{info.ID, f0.Name, f0.Size + 1, 10, "past the end"},
		{info.ID, f0.Name, 1 << 62, 10, "past the end"},
		{info.ID, f0.Name, 0, 0, "out of range"},
		{info.ID, f0.Name, 0, wire.MaxBackupChunk + 1, "out of range"},
	} {
		st, _, msg := backupRead(cl, tc.id, tc.file, tc.off, tc.n)
		if st != wire.StatusInvalidArgument || !strings.Contains(msg, tc.want) {
			t.Errorf("READ %q %q at %d len %d: %v %q, want INVALID_ARGUMENT %q", tc.id, tc.file, tc.off, tc.n, st, msg, tc.want)
		}
	}
	if st, data, msg := backupRead(cl, info.ID, f0.Name, f0.Size, 10); st != wire.StatusOK || len(data) != 0 {
		t.Errorf("READ at the end: %v %d bytes %s", st, len(data), msg)
	}
	if st, p, _ := cl.do(wire.OpBackupRead, []byte{16, 0, 'x'}); st != wire.StatusInvalidArgument {
		t.Errorf("malformed READ: %v %s", st, errText(p))
	}
	// The backup lives on the leader; other nodes do not know it.
	if st, _, msg := backupRead(fc, info.ID, f0.Name, 0, 10); st != wire.StatusInvalidArgument || !strings.Contains(msg, "unknown backup id") {
		t.Errorf("READ on a follower: %v %s", st, msg)
	}

	// At most maxBackups at once.
	ids := []string{info.ID}
	for len(ids) < maxBackups {
		ids = append(ids, backupReady(t, cl).ID)
	}
	if st, p, _ := cl.do(wire.OpBackupBegin, nil); st != wire.StatusError || !strings.Contains(errText(p), "too many backups") {
		t.Fatalf("BEGIN beyond the limit: %v %s", st, errText(p))
	}

	// END removes the files; the id is unknown afterwards.
	for _, id := range ids {
		if st, p, _ := cl.do(wire.OpBackupEnd, wire.AppendBackupID(nil, id)); st != wire.StatusOK {
			t.Fatalf("END: %v %s", st, errText(p))
		}
	}
	if _, err := disk.Stat(dir); err == nil {
		t.Fatalf("%s still exists after END", dir)
	}
	if st, p, _ := cl.do(wire.OpBackupEnd, wire.AppendBackupID(nil, info.ID)); st != wire.StatusInvalidArgument || !strings.Contains(errText(p), "unknown backup id") {
		t.Fatalf("second END: %v %s", st, errText(p))
	}
	if st, _, msg := backupRead(cl, info.ID, f0.Name, 0, 10); st != wire.StatusInvalidArgument || !strings.Contains(msg, "unknown backup id") {
		t.Fatalf("READ after END: %v %s", st, msg)
	}
	if st, p, _ := cl.do(wire.OpBackupStatus, wire.AppendBackupID(nil, info.ID)); st != wire.StatusInvalidArgument {
		t.Fatalf("STATUS after END: %v %s", st, errText(p))
	}
	// The limit counts only live backups.
	last := backupReady(t, cl)
	if st, p, _ := cl.do(wire.OpBackupEnd, wire.AppendBackupID(nil, last.ID)); st != wire.StatusOK {
		t.Fatalf("END: %v %s", st, errText(p))
	}
}

// TestBackupCleanup: an idle backup expires; a server that stops removes
// its backups; one that starts removes what a crash left in DIR/backups.
func TestBackupCleanup(t *testing.T) {
	oldIdle, oldReap := backupIdleTimeout, backupReapInterval
	backupIdleTimeout, backupReapInterval = 300*time.Millisecond, 20*time.Millisecond
	defer func() { backupIdleTimeout, backupReapInterval = oldIdle, oldReap }()

	c := newTestCluster(t, 1)
	c.WaitLeader()
	cl := dial(t, c.addr(1))
	disk := c.Disk(1)
	info := backupReady(t, cl)
	dir := filepath.Join("/node", backupsDir, info.ID+".tmp")
	if _, err := disk.Stat(dir); err != nil {
		t.Fatal(err)
	}
	// Requests keep it alive...
	for range 5 {
		time.Sleep(100 * time.Millisecond)
		if st, _, msg := backupRead(cl, info.ID, info.Files[0].Name, 0, 1); st != wire.StatusOK {
			t.Fatalf("READ while in use: %v %s", st, msg)
		}
	}
	// ...and without them it expires.
	waitFor(t, "the idle backup to be removed", func() bool {
		_, err := disk.Stat(dir)
		return err != nil
	})
	if st, _, msg := backupRead(cl, info.ID, info.Files[0].Name, 0, 1); st != wire.StatusInvalidArgument || !strings.Contains(msg, "unknown backup id") {
		t.Fatalf("READ after expiry: %v %s", st, msg)
	}

	// Stopping the server removes the backups it holds.
	info = backupReady(t, cl)
	c.Stop(1)
	if _, err := disk.Stat(filepath.Join("/node", backupsDir)); err == nil {
		t.Fatal("the backups directory survived a clean stop")
	}
	// A crash leaves them behind; the next start removes them.
	left := filepath.Join("/node", backupsDir, info.ID+".tmp")
	if err := disk.MkdirAll(left, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := vfs.WriteFileSync(disk, left, filepath.Join(left, "000001.sst"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	c.Start(1)
	c.WaitLeader()
	waitFor(t, "the leftover backup to be removed", func() bool {
		_, err := disk.Stat(filepath.Join("/node", backupsDir))
		return err != nil
	})
}

// TestBackupNeedsOperatorToken: the backup opcodes are admin opcodes.
func TestBackupNeedsOperatorToken(t *testing.T) {
	const tok = "operator-secret-0123456789"
	c := newTestCluster(t, 1, func(id uint64, cfg *Config) { cfg.OperatorToken = tok })
	c.WaitLeader()
	cl := dial(t, c.addr(1))
	for _, op := range []wire.Opcode{wire.OpBackupBegin, wire.OpBackupRead, wire.OpBackupEnd, wire.OpBackupStatus} {
		inner := wire.AppendBackupID(nil, "0123456789abcdef")
		if op == wire.OpBackupRead {
			inner = wire.AppendBackupRead(nil, wire.BackupRead{ID: "0123456789abcdef", File: "CURRENT", Length: 1})
		}
		for _, p := range [][]byte{inner, wire.AppendAdmin(nil, "wrong-token-0123456789", op, inner)} {
			st, reply, err := cl.do(op, p)
			if err != nil || st != wire.StatusError || errText(reply) != wire.MsgOperatorCredential {
				t.Fatalf("%v without the token: %v %v %s", op, st, err, errText(reply))
			}
		}
	}
	st, p, err := cl.do(wire.OpBackupBegin, wire.AppendAdmin(nil, tok, wire.OpBackupBegin, nil))
	if err != nil || st != wire.StatusOK {
		t.Fatalf("BEGIN with the token: %v %v %s", st, err, errText(p))
	}
	info, err := wire.DecodeBackupInfo(p)
	if err != nil {
		t.Fatal(err)
	}
	end := wire.AppendBackupID(nil, info.ID)
	if st, p, _ := cl.do(wire.OpBackupEnd, wire.AppendAdmin(nil, tok, wire.OpBackupEnd, end)); st != wire.StatusOK {
		t.Fatalf("END with the token: %v %s", st, errText(p))
	}
}

// TestBackupIncludesWritesAckedByOldLeader: a write acknowledged by a
// leader that is cut off right after it committed is in a backup taken on
// the next leader at once, although that leader did not know the write was
// committed when it was elected. Without BACKUP_BEGIN's read barrier the
// new leader checkpoints before it has applied the write.
func TestBackupIncludesWritesAckedByOldLeader(t *testing.T) {
	c := newTestCluster(t, 3)
	old := c.WaitLeader()
	var others []uint64
	conns := map[uint64]*conn{}
	for id := uint64(1); id <= 3; id++ {
		conns[id] = dial(t, c.addr(id))
		if id != old {
			others = append(others, id)
		}
	}
	// Every message takes 20 ms: the write's entry reaches the followers,
	// their acknowledgements reach the leader, which commits, applies and
	// answers; the commit index it would send next is cut off with the rest
	// of its outgoing traffic.
	c.Net.SetDelay(20 * time.Millisecond)
	time.Sleep(200 * time.Millisecond)
	type result struct {
		st  wire.Status
		err error
	}
	res := make(chan result, 1)
	go func() {
		st, _, err := conns[old].put("acked-by-old-leader", "v")
		res <- result{st, err}
	}()
	time.Sleep(10 * time.Millisecond) // the entry is on its way to the followers
	for _, id := range others {
		c.Net.BlockLink(old, id)
	}
	if r := <-res; r.err != nil || r.st != wire.StatusOK {
		t.Skipf("the write was not acknowledged (%v %v): the timing of this test did not work out", r.st, r.err)
	}
	// The first moment a follower leads, ask it for a backup.
	var lead uint64
	deadline := time.Now().Add(10 * time.Second)
	for lead == 0 {
		for _, id := range others {
			if c.node(id).Node().IsLeader() {
				lead = id
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no new leader")
		}
		time.Sleep(200 * time.Microsecond)
	}
	info := backupReady(t, conns[lead])
	db, err := engine.Open(filepath.Join("/node", backupsDir, info.ID+".tmp"), &engine.Options{FS: c.Disk(lead), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v, err := kv.LocalGet(db, []byte("acked-by-old-leader")); err != nil || string(v) != "v" {
		t.Fatalf("the backup of the new leader (index %d) lacks a write the old leader acknowledged: %q %v", info.AppliedIndex, v, err)
	}
	c.Net.Heal()
	c.Net.SetDelay(0)
}
