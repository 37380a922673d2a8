package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/engine"
	"github.com/kayadb/kayadb/internal/lsm/base"
)

type jOp struct {
	Kind     string  `json:"kind"`
	Key      *string `json:"key"`
	KeyHex   *string `json:"key_hex"`
	ValueLen *int    `json:"value_len"`
	Value    *string `json:"value"`
	ValueHex *string `json:"value_hex"`
}

type jRecord struct {
	Offset int64  `json:"offset"`
	Seq    uint64 `json:"seq"`
	Count  int    `json:"count"`
	Ops    []jOp  `json:"ops"`
}

type jTail struct {
	Offset       int64  `json:"offset"`
	DroppedBytes int64  `json:"dropped_bytes"`
	Reason       string `json:"reason"`
}

type jWAL struct {
	File            string    `json:"file"`
	LogNumber       uint64    `json:"log_number"`
	LogNumberSource string    `json:"log_number_source"`
	SizeBytes       int64     `json:"size_bytes"`
	Records         []jRecord `json:"records"`
	RecordCount     int       `json:"record_count"`
	Truncated       bool      `json:"truncated"`
	OpCount         int       `json:"op_count"`
	FirstSeq        uint64    `json:"first_seq"`
	LastSeq         uint64    `json:"last_seq"`
	SyncMarkers     int       `json:"sync_markers"`
	End             string    `json:"end"`
	EndOffset       int64     `json:"end_offset"`
	TornTail        *jTail    `json:"torn_tail"`
	Error           string    `json:"error"`
	ErrorOffset     *int64    `json:"error_offset"`
	Warnings        []string  `json:"warnings"`
	EncryptionKeys  []uint32  `json:"encryption_keys"`
}

type jIKey struct {
	Key    *string `json:"key"`
	KeyHex *string `json:"key_hex"`
	Seq    uint64  `json:"seq"`
	Kind   string  `json:"kind"`
}

type jTable struct {
	Level       int    `json:"level"`
	FileNum     uint64 `json:"file_num"`
	SizeBytes   uint64 `json:"size_bytes"`
	Smallest    jIKey  `json:"smallest"`
	Largest     jIKey  `json:"largest"`
	SmallestSeq uint64 `json:"smallest_seq"`
	LargestSeq  uint64 `json:"largest_seq"`
}

type jEdit struct {
	Offset         int64   `json:"offset"`
	Comparator     string  `json:"comparator"`
	LogNumber      *uint64 `json:"log_number"`
	NextFileNumber *uint64 `json:"next_file_number"`
	LastSeq        *uint64 `json:"last_seq"`
	Deleted        []struct {
		Level   int    `json:"level"`
		FileNum uint64 `json:"file_num"`
	} `json:"deleted"`
	Added []jTable `json:"added"`
}

type jManifest struct {
	File            string  `json:"file"`
	LogNumber       uint64  `json:"log_number"`
	LogNumberSource string  `json:"log_number_source"`
	SizeBytes       int64   `json:"size_bytes"`
	Edits           []jEdit `json:"edits"`
	EditCount       int     `json:"edit_count"`
	Truncated       bool    `json:"truncated"`
	Final           struct {
		Comparator     string `json:"comparator"`
		LogNumber      uint64 `json:"log_number"`
		NextFileNumber uint64 `json:"next_file_number"`
		LastSeq        uint64 `json:"last_seq"`
		TableCount     int    `json:"table_count"`
		Levels         []struct {
			Level     int      `json:"level"`
			SizeBytes uint64   `json:"size_bytes"`
			Tables    []jTable `json:"tables"`
		} `json:"levels"`
	} `json:"final"`
	End         string   `json:"end"`
	EndOffset   int64    `json:"end_offset"`
	TornTail    *jTail   `json:"torn_tail"`
	Error       string   `json:"error"`
	ErrorOffset *int64   `json:"error_offset"`
	Warnings    []string `json:"warnings"`
	// EncryptionKeys: the key ids of sealed records (empty: plain).
	EncryptionKeys []uint32 `json:"encryption_keys"`
}

type jSST struct {
	File       string  `json:"file"`
	FileNum    *uint64 `json:"file_num"`
	SizeBytes  int64   `json:"size_bytes"`
	Properties *struct {
		NumEntries       uint64 `json:"num_entries"`
		NumDeletions     uint64 `json:"num_deletions"`
		NumDataBlocks    uint64 `json:"num_data_blocks"`
		RawKeySize       uint64 `json:"raw_key_size"`
		RawValueSize     uint64 `json:"raw_value_size"`
		SmallestSeq      uint64 `json:"smallest_seq"`
		LargestSeq       uint64 `json:"largest_seq"`
		IndexSize        uint64 `json:"index_size"`
		FilterSize       uint64 `json:"filter_size"`
		FilterBitsPerKey uint64 `json:"filter_bits_per_key"`
		Compression      string `json:"compression"`
		FormatVersion    uint32 `json:"format_version"`
	} `json:"properties"`
	Encryption *struct {
		Encrypted bool   `json:"encrypted"`
		KeyID     uint32 `json:"key_id"`
	} `json:"encryption"`
	Layout *struct {
		FileSize uint64 `json:"file_size"`
		Blocks   []struct {
			Kind        string `json:"kind"`
			Offset      uint64 `json:"offset"`
			Length      uint64 `json:"length"`
			Compression string `json:"compression"`
		} `json:"blocks"`
	} `json:"layout"`
	Entries *[]struct {
		Key      *string `json:"key"`
		KeyHex   *string `json:"key_hex"`
		Seq      uint64  `json:"seq"`
		Kind     string  `json:"kind"`
		ValueLen int     `json:"value_len"`
		Value    *string `json:"value"`
		ValueHex *string `json:"value_hex"`
	} `json:"entries"`
	EntriesRead  int      `json:"entries_read"`
	Truncated    bool     `json:"truncated"`
	EntriesError string   `json:"entries_error"`
	Checksums    string   `json:"checksums"`
	Error        string   `json:"error"`
	Warnings     []string `json:"warnings"`
}

// fixture is a closed database with one flushed L0 table (a..e set at seqs
// 1-5, c deleted at seq 6) and a newest WAL holding three synced batches
// written after the flush (seqs 7-11) and the sync marker written by Close.
type fixture struct {
	dir, wal, sst, manifest string
}

func makeFixture(t testing.TB) fixture {
	t.Helper()
	dir := t.TempDir()
	db, err := engine.Open(dir, &engine.Options{DisableAutomaticCompactions: true})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range []string{"a", "b", "c", "d", "e"} {
		if err := db.Set([]byte(k), []byte(strings.Repeat("v", i+1)), engine.NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Delete([]byte("c"), engine.NoSync); err != nil {
		t.Fatal(err)
	}
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	// seq 7: one SET; seq 8-10: a batch of SET, DEL, SET(binary key);
	// seq 11: a DEL. Each synced, so later chunks vouch for earlier bytes.
	if err := db.Set([]byte("x"), []byte("hello"), engine.Sync); err != nil {
		t.Fatal(err)
	}
	b := db.NewBatch()
	_ = b.Set([]byte("y"), []byte("world"))
	_ = b.Delete([]byte("a"))
	_ = b.Set([]byte{0xff, 0x00}, []byte{0xfe, 0xed})
	if err := b.Commit(engine.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete([]byte("b"), engine.Sync); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	return fixture{
		dir:      dir,
		wal:      newestFile(t, dir, base.FileTypeLog),
		sst:      newestFile(t, dir, base.FileTypeTable),
		manifest: newestFile(t, dir, base.FileTypeManifest),
	}
}

// inspect runs an inspect command; it never needs --data.
func inspect(t *testing.T, args ...string) result {
	t.Helper()
	return runEnv(t, nil, append([]string{"inspect"}, args...)...)
}

func TestInspectWAL(t *testing.T) {
	fx := makeFixture(t)
	r := inspect(t, "--json", "wal", fx.wal)
	if r.code != ExitOK {
		t.Fatal(r)
	}
	var w jWAL
	decodeStrict(t, r.stdout, &w)
	_, num, _ := base.ParseFilename(filepath.Base(fx.wal))
	if w.LogNumber != uint64(num) || w.End != "eof" || w.SyncMarkers != 1 || w.RecordCount != 3 || w.OpCount != 5 ||
		w.FirstSeq != 7 || w.LastSeq != 11 || w.Truncated || w.Error != "" || len(w.Warnings) != 0 {
		t.Fatalf("wal summary %+v", w)
	}
	st, _ := os.Stat(fx.wal)
	if w.EndOffset != st.Size() || w.SizeBytes != st.Size() {
		t.Fatalf("end offset %d, size %d, file %d", w.EndOffset, w.SizeBytes, st.Size())
	}
	if len(w.Records) != 3 || w.Records[0].Offset != 0 || w.Records[1].Seq != 8 || w.Records[1].Count != 3 || w.Records[2].Seq != 11 {
		t.Fatalf("records %+v", w.Records)
	}
	ops := w.Records[1].Ops
	if len(ops) != 3 ||
		ops[0].Kind != "SET" || str(ops[0].Key) != "y" || ops[0].ValueLen == nil || *ops[0].ValueLen != 5 || ops[0].Value != nil ||
		ops[1].Kind != "DEL" || str(ops[1].Key) != "a" || ops[1].ValueLen != nil ||
		ops[2].Kind != "SET" || ops[2].Key != nil || str(ops[2].KeyHex) != "ff00" {
		t.Fatalf("ops %+v", ops)
	}

	h := inspect(t, "wal", fx.wal)
	for _, want := range []string{"log number", "batch seq=8 count=3", "SET y (value 5 bytes)", "DEL a", "0xff00", "end: clean end of log", "1 sync marker"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("human output lacks %q:\n%s", want, h.stdout)
		}
	}

	// --limit and --values.
	decodeStrict(t, inspect(t, "--json", "wal", "--limit", "1", "--values", fx.wal).stdout, &w)
	if len(w.Records) != 1 || !w.Truncated || w.RecordCount != 3 || str(w.Records[0].Ops[0].Value) != "hello" {
		t.Fatalf("limit/values %+v", w)
	}
	if h := inspect(t, "wal", "--values", fx.wal); !strings.Contains(h.stdout, `SET 0xff00 = 0xfeed`) {
		t.Fatalf("values output:\n%s", h.stdout)
	}

	// A renamed copy: the log number comes from the first chunk, or --log-num.
	cp := filepath.Join(t.TempDir(), "wal-copy")
	copyFile(t, fx.wal, cp)
	decodeStrict(t, inspect(t, "--json", "wal", cp).stdout, &w)
	if w.LogNumber != uint64(num) || !strings.Contains(w.LogNumberSource, "first chunk") || w.RecordCount != 3 {
		t.Fatalf("renamed copy %+v", w)
	}
	decodeStrict(t, inspect(t, "--json", "wal", "--log-num", fmt.Sprint(num), cp).stdout, &w)
	if w.RecordCount != 3 || w.LogNumberSource != "from --log-num" {
		t.Fatalf("--log-num %+v", w)
	}
	r = inspect(t, "wal", "--log-num", "999", cp)
	if r.code != ExitInvalidArgument || !strings.Contains(r.stderr, fmt.Sprintf("pass --log-num %d", num)) {
		t.Fatalf("wrong --log-num: %s", r)
	}
}

func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestInspectManifest(t *testing.T) {
	fx := makeFixture(t)
	_, sstNum, _ := base.ParseFilename(filepath.Base(fx.sst))
	for _, path := range []string{fx.manifest, fx.dir} {
		r := inspect(t, "--json", "manifest", path)
		if r.code != ExitOK {
			t.Fatal(r)
		}
		var m jManifest
		decodeStrict(t, r.stdout, &m)
		if m.File != fx.manifest || m.End != "eof" || m.EditCount == 0 || len(m.Edits) != m.EditCount || m.Error != "" {
			t.Fatalf("manifest %+v", m)
		}
		if m.Edits[0].Comparator != "kaya.bytewise.v1" || m.Edits[0].NextFileNumber == nil {
			t.Fatalf("first edit is not a snapshot: %+v", m.Edits[0])
		}
		if len(m.Final.Levels) != 7 || m.Final.TableCount != 1 || len(m.Final.Levels[0].Tables) != 1 {
			t.Fatalf("final %+v", m.Final)
		}
		tb := m.Final.Levels[0].Tables[0]
		if tb.FileNum != uint64(sstNum) || str(tb.Smallest.Key) != "a" || str(tb.Largest.Key) != "e" ||
			tb.SmallestSeq != 1 || tb.LargestSeq != 6 || tb.SizeBytes == 0 {
			t.Fatalf("table %+v", tb)
		}
		if m.Final.LastSeq < 6 || m.Final.NextFileNumber == 0 {
			t.Fatalf("counters %+v", m.Final)
		}
	}
	h := inspect(t, "manifest", fx.manifest)
	for _, want := range []string{"edit 1 at offset 0", "comparator:", "next file number:", "live tables after", "L0: 1 table", "[a#", "end: clean end of log"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("human output lacks %q:\n%s", want, h.stdout)
		}
	}
}

func TestInspectSSTable(t *testing.T) {
	fx := makeFixture(t)
	r := inspect(t, "--json", "sstable", fx.sst)
	if r.code != ExitOK {
		t.Fatal(r)
	}
	var s jSST
	decodeStrict(t, r.stdout, &s)
	// The flush dropped c's SET (seq 3), shadowed by its deletion.
	if s.Properties == nil || s.Properties.NumEntries != 5 || s.Properties.NumDeletions != 1 ||
		s.Properties.SmallestSeq != 1 || s.Properties.LargestSeq != 6 || s.Properties.Compression != "snappy" {
		t.Fatalf("properties %+v", s.Properties)
	}
	if s.Layout == nil || len(s.Layout.Blocks) < 4 || s.Layout.Blocks[0].Kind != "data" || s.Layout.Blocks[len(s.Layout.Blocks)-1].Kind != "footer" {
		t.Fatalf("layout %+v", s.Layout)
	}
	if s.Entries == nil || len(*s.Entries) != 5 || s.EntriesRead != 5 || s.Checksums != "ok" || s.Error != "" || s.FileNum == nil {
		t.Fatalf("sstable %+v", s)
	}
	es := *s.Entries
	if str(es[0].Key) != "a" || es[0].Seq != 1 || es[0].Kind != "SET" || es[0].ValueLen != 1 {
		t.Fatalf("entry 0 %+v", es[0])
	}
	if str(es[2].Key) != "c" || es[2].Seq != 6 || es[2].Kind != "DEL" || es[2].ValueLen != 0 || str(es[4].Key) != "e" || es[4].Seq != 5 {
		t.Fatalf("entries %+v", es)
	}

	s = jSST{}
	decodeStrict(t, inspect(t, "--json", "sstable", "--entries=false", fx.sst).stdout, &s)
	if s.Entries != nil || s.Checksums != "ok" {
		t.Fatalf("--entries=false %+v", s)
	}
	s = jSST{}
	decodeStrict(t, inspect(t, "--json", "sst", "--limit", "2", "--values", fx.sst).stdout, &s)
	if s.Entries == nil || len(*s.Entries) != 2 || !s.Truncated || s.EntriesRead != 5 || str((*s.Entries)[1].Value) != "vv" {
		t.Fatalf("--limit %+v", s)
	}

	h := inspect(t, "sstable", fx.sst)
	for _, want := range []string{"properties:", "entries:          5 (1 deletions)", "layout (", "footer", "a#1,SET (value 1 bytes)", "c#6,DEL", "checksums: ok"} {
		if !strings.Contains(h.stdout, want) {
			t.Errorf("human output lacks %q:\n%s", want, h.stdout)
		}
	}
}

// damage describes a damaged copy of a fixture file.
type damage struct {
	name  string
	kind  string // wal, sstable, manifest
	src   func(fx fixture) string
	edit  func(b []byte) []byte
	fname string // base name of the damaged copy
	end   string // expected "end" for wal/manifest ("" = don't check)
}

func TestInspectDamaged(t *testing.T) {
	fx := makeFixture(t)
	wal := func(fx fixture) string { return fx.wal }
	sst := func(fx fixture) string { return fx.sst }
	man := func(fx fixture) string { return fx.manifest }
	garbage := func(n int) func([]byte) []byte {
		return func([]byte) []byte {
			b := make([]byte, n)
			x := uint32(2463534242)
			for i := range b {
				x ^= x << 13
				x ^= x >> 17
				x ^= x << 5
				b[i] = byte(x)
			}
			return b
		}
	}
	truncate := func(frac float64) func([]byte) []byte {
		return func(b []byte) []byte { return b[:int(float64(len(b))*frac)] }
	}
	flip := func(off int) func([]byte) []byte {
		return func(b []byte) []byte {
			b = append([]byte(nil), b...)
			if off < 0 {
				off += len(b)
			}
			b[off] ^= 0x40
			return b
		}
	}
	cases := []damage{
		{"wal truncated mid-record", "wal", wal, truncate(0.6), "", "torn_tail"},
		{"wal garbage", "wal", wal, garbage(5000), "000042.log", "torn_tail"},
		{"wal garbage unnamed", "wal", wal, garbage(100), "garbage", "torn_tail"},
		{"wal first record damaged", "wal", wal, flip(25), "", "corruption"},
		{"manifest truncated", "manifest", man, truncate(0.5), "", "torn_tail"},
		{"manifest garbage", "manifest", man, garbage(300), "MANIFEST-000009", ""},
		{"manifest flipped", "manifest", man, flip(30), "", ""},
		{"sstable truncated", "sstable", sst, truncate(0.7), "", ""},
		{"sstable garbage", "sstable", sst, garbage(4096), "", ""},
		{"sstable empty", "sstable", sst, truncate(0), "", ""},
		{"sstable data block flipped", "sstable", sst, flip(3), "", ""},
		{"sstable footer flipped", "sstable", sst, flip(-10), "", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := c.src(fx)
			name := c.fname
			if name == "" {
				name = filepath.Base(src)
			}
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(t.TempDir(), name)
			if err := os.WriteFile(path, c.edit(b), 0o600); err != nil {
				t.Fatal(err)
			}
			h := inspect(t, c.kind, path)
			if h.code != ExitCorruption || !strings.Contains(h.stderr, "error: ") {
				t.Fatalf("human: want exit 3: %s", h)
			}
			r := inspect(t, "--json", c.kind, path)
			if r.code != ExitCorruption {
				t.Fatalf("json: want exit 3: %s", r)
			}
			switch c.kind {
			case "wal":
				var w jWAL
				decodeStrict(t, r.stdout, &w)
				if (c.end != "" && w.End != c.end) || w.Error == "" || w.ErrorOffset == nil {
					t.Fatalf("wal %+v", w)
				}
			case "manifest":
				var m jManifest
				decodeStrict(t, r.stdout, &m)
				if (c.end != "" && m.End != c.end) || m.End == "eof" || m.Error == "" || len(m.Final.Levels) != 7 {
					t.Fatalf("manifest %+v", m)
				}
			case "sstable":
				var s jSST
				decodeStrict(t, r.stdout, &s)
				if s.Error == "" || s.Checksums == "ok" {
					t.Fatalf("sstable %+v", s)
				}
			}
		})
	}

	// The records before the damage are listed.
	b, _ := os.ReadFile(fx.wal)
	st := len(b)
	cut := filepath.Join(t.TempDir(), filepath.Base(fx.wal))
	if err := os.WriteFile(cut, b[:st-30], 0o600); err != nil {
		t.Fatal(err)
	}
	var w jWAL
	decodeStrict(t, inspect(t, "--json", "wal", cut).stdout, &w)
	if w.RecordCount != 2 || w.End != "torn_tail" || w.TornTail == nil || w.TornTail.Offset != w.EndOffset {
		t.Fatalf("cut wal %+v", w)
	}
	// A damaged data block: properties and layout are still shown.
	sb, _ := os.ReadFile(fx.sst)
	sb[3] ^= 0x40
	bad := filepath.Join(t.TempDir(), filepath.Base(fx.sst))
	if err := os.WriteFile(bad, sb, 0o600); err != nil {
		t.Fatal(err)
	}
	var s jSST
	decodeStrict(t, inspect(t, "--json", "sstable", bad).stdout, &s)
	if s.Properties == nil || s.Layout == nil || s.EntriesError == "" || !strings.Contains(s.Checksums, "offset 0") {
		t.Fatalf("damaged data block %+v", s)
	}
}

func TestInspectBadPaths(t *testing.T) {
	dir := t.TempDir()
	for _, kind := range []string{"wal", "sstable", "manifest"} {
		if r := inspect(t, kind, filepath.Join(dir, "nope")); r.code != ExitNotFound {
			t.Errorf("%s missing file: %s", kind, r)
		}
	}
	if r := inspect(t, "wal", dir); r.code != ExitInvalidArgument {
		t.Errorf("wal on a directory: %s", r)
	}
	if r := inspect(t, "manifest", dir); r.code != ExitNotFound || !strings.Contains(r.stderr, "no database") {
		t.Errorf("manifest on an empty directory: %s", r)
	}
	// An empty WAL (as just created) is fine.
	empty := filepath.Join(dir, "000001.log")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	r := inspect(t, "--json", "wal", empty)
	var w jWAL
	decodeStrict(t, r.stdout, &w)
	if r.code != ExitOK || w.End != "eof" || w.RecordCount != 0 {
		t.Errorf("empty wal: %s", r)
	}
	if len(listDir(t, dir)) != 2 {
		t.Errorf("inspect created files: %v", listDir(t, dir))
	}
}
