package manifest

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/kayadb/kayadb/internal/lsm/base"
	"github.com/kayadb/kayadb/internal/vfs"
)

func meta(num base.FileNum, smallest, largest string, sseq, lseq base.SeqNum) *FileMetadata {
	return &FileMetadata{
		FileNum: num, Size: uint64(num) * 100,
		Smallest:    base.MakeInternalKey([]byte(smallest), lseq, base.KindSet),
		Largest:     base.MakeInternalKey([]byte(largest), sseq, base.KindSet),
		SmallestSeq: sseq, LargestSeq: lseq,
	}
}

func sampleEdit() *VersionEdit {
	return &VersionEdit{
		Comparator: ComparatorName,
		LogNumber:  12, HasLogNumber: true,
		NextFileNum: 40, HasNextFileNum: true,
		LastSeq: 999, HasLastSeq: true,
		DeletedFiles: []DeletedFile{{Level: 0, FileNum: 3}, {Level: 5, FileNum: 7}},
		NewFiles:     []NewFile{{Level: 6, Meta: meta(21, "a", "m", 1, 50)}, {Level: 1, Meta: meta(22, "n", "z", 51, 90)}},
	}
}

func TestEditRoundTrip(t *testing.T) {
	e := sampleEdit()
	var d VersionEdit
	if err := d.Decode(e.Encode(nil)); err != nil {
		t.Fatal(err)
	}
	if d.String() != e.String() {
		t.Fatalf("round trip:\n%s\nvs\n%s", d.String(), e.String())
	}
	for i, n := range d.NewFiles {
		w := e.NewFiles[i].Meta
		if n.Meta.FileNum != w.FileNum || n.Meta.Size != w.Size || base.CompareInternal(n.Meta.Smallest, w.Smallest) != 0 ||
			base.CompareInternal(n.Meta.Largest, w.Largest) != 0 || n.Meta.SmallestSeq != w.SmallestSeq || n.Meta.LargestSeq != w.LargestSeq {
			t.Fatalf("file %d differs", i)
		}
	}
}

// TestEditGolden pins the encoding of a small edit.
func TestEditGolden(t *testing.T) {
	e := &VersionEdit{LogNumber: 5, HasLogNumber: true, DeletedFiles: []DeletedFile{{Level: 2, FileNum: 9}}}
	want := []byte{2, 5, 6, 2, 9}
	if got := e.Encode(nil); !bytes.Equal(got, want) {
		t.Fatalf("got % x want % x", got, want)
	}
}

func TestEditDecodeErrors(t *testing.T) {
	good := sampleEdit().Encode(nil)
	for n := 1; n < len(good); n++ {
		var d VersionEdit
		err := d.Decode(good[:n])
		if err == nil {
			// Some prefixes end exactly on a field boundary and are valid.
			continue
		}
		if !errors.Is(err, base.ErrCorruption) {
			t.Fatalf("prefix %d: %v", n, err)
		}
	}
	cases := map[string][]byte{
		"unknown tag":   {99, 1},
		"level":         {6, 9, 1},
		"short key":     {7, 0, 1, 1, 2, 'a', 'b', 2, 'a', 'b', 0, 0},
		"inverted keys": (&VersionEdit{NewFiles: []NewFile{{Level: 1, Meta: meta(1, "z", "a", 1, 2)}}}).Encode(nil),
		"inverted seqs": (&VersionEdit{NewFiles: []NewFile{{Level: 1, Meta: meta(1, "a", "z", 5, 2)}}}).Encode(nil),
	}
	for name, b := range cases {
		var d VersionEdit
		if err := d.Decode(b); !errors.Is(err, base.ErrCorruption) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

func FuzzVersionEdit(f *testing.F) {
	f.Add(sampleEdit().Encode(nil))
	f.Add([]byte{})
	f.Add([]byte{7, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var d VersionEdit
		if err := d.Decode(b); err != nil {
			if !errors.Is(err, base.ErrCorruption) {
				t.Fatalf("error class: %v", err)
			}
			return
		}
		var d2 VersionEdit
		if err := d2.Decode(d.Encode(nil)); err != nil {
			t.Fatalf("re-encoded edit does not decode: %v", err)
		}
		if d.String() != d2.String() {
			t.Fatal("re-encoding changed the edit")
		}
	})
}

func TestApplyChecks(t *testing.T) {
	v, err := Apply(nil, nil, &VersionEdit{NewFiles: []NewFile{
		{Level: 1, Meta: meta(1, "a", "c", 1, 5)},
		{Level: 1, Meta: meta(2, "d", "f", 6, 9)},
		{Level: 0, Meta: meta(3, "a", "z", 10, 12)},
		{Level: 0, Meta: meta(4, "b", "y", 13, 15)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if v.NumFiles(0) != 2 || v.Levels[0][0].FileNum != 3 || v.NumFiles(1) != 2 {
		t.Fatalf("version:\n%s", v)
	}
	if got := v.Overlaps(1, []byte("b"), []byte("e")); len(got) != 2 {
		t.Fatalf("overlaps: %v", got)
	}
	if got := v.Overlaps(1, []byte("g"), nil); len(got) != 0 {
		t.Fatalf("overlaps past end: %v", got)
	}
	if _, err := Apply(v, nil, &VersionEdit{DeletedFiles: []DeletedFile{{Level: 2, FileNum: 1}}}); err == nil {
		t.Fatal("deleting a table from the wrong level must fail")
	}
	if _, err := Apply(v, nil, &VersionEdit{NewFiles: []NewFile{{Level: 3, Meta: meta(2, "x", "y", 1, 1)}}}); err == nil {
		t.Fatal("adding an existing table must fail")
	}
	if _, err := Apply(v, nil, &VersionEdit{NewFiles: []NewFile{{Level: 1, Meta: meta(9, "c", "d", 1, 1)}}}); err == nil {
		t.Fatal("overlapping L1 tables must fail")
	}
}

func TestVersionRefs(t *testing.T) {
	var obsolete []base.FileNum
	on := func(fs []*FileMetadata) {
		for _, f := range fs {
			obsolete = append(obsolete, f.FileNum)
		}
	}
	v1, _ := Apply(nil, on, &VersionEdit{NewFiles: []NewFile{{Level: 1, Meta: meta(1, "a", "b", 1, 1)}, {Level: 1, Meta: meta(2, "c", "d", 2, 2)}}})
	v1.Ref()
	v2, _ := Apply(v1, on, &VersionEdit{DeletedFiles: []DeletedFile{{Level: 1, FileNum: 1}}})
	v2.Ref()
	v1.Unref()
	if len(obsolete) != 1 || obsolete[0] != 1 {
		t.Fatalf("obsolete after v1 release: %v", obsolete)
	}
	v2.Unref()
	if len(obsolete) != 2 {
		t.Fatalf("obsolete after v2 release: %v", obsolete)
	}
}

func newSet(t *testing.T, fs vfs.FS, max int64) *VersionSet {
	t.Helper()
	if err := fs.MkdirAll("/db", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := vfs.SyncDir(fs, "/"); err != nil {
		t.Fatal(err)
	}
	vs, err := Create(Options{FS: fs, Dir: "/db", MaxManifestBytes: max})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func addTable(t *testing.T, vs *VersionSet, i int) {
	t.Helper()
	num := vs.NewFileNum()
	k := fmt.Sprintf("k%05d", i)
	e := &VersionEdit{LastSeq: base.SeqNum(i + 1), HasLastSeq: true,
		NewFiles: []NewFile{{Level: 6, Meta: meta(num, k, k, base.SeqNum(i+1), base.SeqNum(i+1))}}}
	if err := vs.LogAndApply(e); err != nil {
		t.Fatal(err)
	}
}

func TestVersionSetReloadAndRotate(t *testing.T) {
	fs := vfs.NewMem()
	vs := newSet(t, fs, 512)
	for i := 0; i < 100; i++ {
		addTable(t, vs, i)
	}
	manNum := vs.ManifestFileNum()
	if err := vs.Close(); err != nil {
		t.Fatal(err)
	}
	names, _ := fs.List("/db")
	manifests := 0
	for _, n := range names {
		if ft, _, _ := base.ParseFilename(n); ft == base.FileTypeManifest {
			manifests++
		}
	}
	if manifests != 1 {
		t.Fatalf("old MANIFESTs not removed after rotation: %v", names)
	}
	vs2, rep, err := Load(Options{FS: fs, Dir: "/db"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Manifest != base.MakeFilename(base.FileTypeManifest, manNum) {
		t.Fatalf("loaded %s, want manifest %d", rep.Manifest, manNum)
	}
	v := vs2.Current()
	defer v.Unref()
	if v.NumFiles(6) != 100 || vs2.LastSeq() != 100 {
		t.Fatalf("reloaded %d tables, last seq %d", v.NumFiles(6), vs2.LastSeq())
	}
	if vs2.NextFileNum() <= v.Levels[6][99].FileNum {
		t.Fatal("next file number must exceed every table")
	}
}

// TestManifestCrashAtEveryWrite cuts power at every write operation of a
// sequence of edits with rotation: Load must always succeed and show a
// state the set had acknowledged (all edits whose LogAndApply returned
// before the cut, at most one more).
func TestManifestCrashAtEveryWrite(t *testing.T) {
	for k := int64(1); ; k++ {
		mem := vfs.NewMem()
		var count int64
		var clone *vfs.MemFS
		acked, ackedAtCut := 0, -1
		fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
			if op.Kind.IsWrite() {
				count++
				if count == k {
					ackedAtCut = acked
					clone = mem.CrashClone(vfs.CrashCloneOptions{})
				}
			}
			return nil
		}))
		vs := newSet(t, fs, 300)
		for i := 0; i < 30; i++ {
			addTable(t, vs, i)
			acked = i + 1
		}
		_ = vs.Close()
		if clone == nil {
			t.Logf("%d write operations tested", k-1)
			return
		}
		if _, err := clone.Stat("/db/CURRENT"); err != nil {
			if ackedAtCut > 0 {
				t.Fatalf("cut %d: CURRENT missing after %d acknowledged edits\n%s", k, ackedAtCut, clone)
			}
			continue // the cut came before creation finished
		}
		vs2, _, err := Load(Options{FS: clone, Dir: "/db"})
		if err != nil {
			t.Fatalf("cut %d: load: %v\n%s", k, err, clone)
		}
		v := vs2.Current()
		n := v.NumFiles(6)
		v.Unref()
		if n < ackedAtCut || n > ackedAtCut+1 {
			t.Fatalf("cut %d: %d tables after %d acknowledged edits", k, n, ackedAtCut)
		}
	}
}

func TestCurrentDamage(t *testing.T) {
	fs := vfs.NewMem()
	vs := newSet(t, fs, 1<<20)
	addTable(t, vs, 1)
	_ = vs.Close()
	for name, content := range map[string]string{
		"no newline":   "MANIFEST-000001",
		"not manifest": "000001.log\n",
		"missing file": "MANIFEST-000777\n",
	} {
		f, _ := fs.Create("/db/CURRENT")
		_, _ = io.WriteString(f, content)
		_ = f.Close()
		if _, _, err := Load(Options{FS: fs, Dir: "/db"}); !errors.Is(err, base.ErrCorruption) {
			t.Errorf("%s: got %v", name, err)
		}
	}
}

// TestManifestNoSpaceAtEveryWrite fails each write operation of a sequence
// of edits (with rotations) for lack of space, entirely or part way, and
// retries the edit as the engine does once space is back. A failure that
// is undone must leave the set usable and unchanged; then a crash and a
// clean Close must both load every acknowledged edit.
func TestManifestNoSpaceAtEveryWrite(t *testing.T) {
	setup := func() *vfs.MemFS {
		mem := vfs.NewMem()
		_ = mem.MkdirAll("/db", 0o700)
		_ = vfs.SyncDir(mem, "/")
		return mem
	}
	counter := vfs.OnIndex(-1, vfs.WriteOps)
	{
		vs, err := Create(Options{FS: vfs.NewErrorFS(setup(), counter), Dir: "/db", MaxManifestBytes: 300})
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 30; i++ {
			addTable(t, vs, i)
		}
		_ = vs.ProveDurable()
		_ = vs.Close()
	}
	for _, partial := range []bool{false, true} {
		for k := int64(0); k < counter.Count(); k++ {
			what := fmt.Sprintf("partial=%v op %d", partial, k)
			mem := setup()
			inj := vfs.OnIndex(k, vfs.WriteOps)
			inj.Err = vfs.ErrNoSpace
			if partial {
				inj.Err = vfs.PartialWrite(7, vfs.ErrNoSpace)
			}
			var failed vfs.Op
			fs := vfs.NewErrorFS(mem, vfs.InjectorFunc(func(op vfs.Op) error {
				err := inj.MaybeError(op)
				if err != nil {
					failed = op
				}
				return err
			}))
			vs, err := Create(Options{FS: fs, Dir: "/db", MaxManifestBytes: 300})
			if err != nil {
				if !vfs.IsNoSpace(err) {
					t.Fatalf("%s: Create: %v", what, err)
				}
				// A retried Open.
				if vs, err = Create(Options{FS: fs, Dir: "/db", MaxManifestBytes: 300}); err != nil {
					t.Fatalf("%s: second Create: %v\n%s", what, err, mem)
				}
			}
			acked := 0
			for i := 0; i < 30; i++ {
				num := vs.NewFileNum()
				key := fmt.Sprintf("k%05d", i)
				e := func() *VersionEdit {
					return &VersionEdit{LastSeq: base.SeqNum(i + 1), HasLastSeq: true,
						NewFiles: []NewFile{{Level: 6, Meta: meta(num, key, key, base.SeqNum(i+1), base.SeqNum(i+1))}}}
				}
				err := vs.LogAndApply(e())
				if err != nil {
					if !vfs.IsNoSpace(err) {
						t.Fatalf("%s: edit %d: %v", what, i, err)
					}
					if v := vs.Current(); v.NumFiles(6) != acked {
						t.Fatalf("%s: a failed edit was applied", what)
					} else {
						v.Unref()
					}
					err = vs.LogAndApply(e())
				}
				if err != nil {
					// Only a failure that could not be undone is sticky.
					if vs.Err() == nil {
						t.Fatalf("%s: retried edit %d failed but the set is not stopped: %v", what, i, err)
					}
					break
				}
				acked++
			}
			if err := vs.ProveDurable(); err != nil && vs.Err() == nil {
				t.Fatalf("%s: ProveDurable: %v", what, err)
			}
			// A failure that was not undone stopped the set; the edit it
			// failed on may or may not have reached the disk.
			maybe := 0
			if vs.Err() != nil {
				maybe = 1
				// Only a failed fsync (of the MANIFEST, or of the directory
				// after CURRENT was renamed) cannot be undone.
				if failed.Kind != vfs.OpFileSync {
					t.Fatalf("%s: the set stopped after a failed %v: %v", what, failed, vs.Err())
				}
			}
			crashed := mem.CrashClone(vfs.CrashCloneOptions{})
			_ = vs.Close()
			for _, c := range []struct {
				fs  *vfs.MemFS
				how string
			}{{crashed, "crash"}, {mem, "close"}} {
				vs2, _, err := Load(Options{FS: c.fs, Dir: "/db"})
				if err != nil {
					t.Fatalf("%s: load after %s: %v\n%s", what, c.how, err, c.fs)
				}
				v := vs2.Current()
				if n := v.NumFiles(6); n < acked || n > acked+maybe {
					t.Fatalf("%s: %d tables after %s, %d edits acknowledged", what, n, c.how, acked)
				}
				v.Unref()
				_ = vs2.Close()
				if c.how == "crash" || maybe == 1 {
					continue
				}
				// An undone failure leaves nothing behind.
				names, _ := c.fs.List("/db")
				manifests := 0
				for _, n := range names {
					if ft, _, _ := base.ParseFilename(n); ft == base.FileTypeManifest {
						manifests++
					}
					if strings.HasSuffix(n, ".tmp") {
						t.Fatalf("%s: %s left behind", what, n)
					}
				}
				// (A failed removal of the MANIFEST a rotation replaced
				// leaves it for the next Load to remove.)
				if manifests != 1 && failed.Kind != vfs.OpRemove {
					t.Fatalf("%s: %d MANIFEST files left: %v", what, manifests, names)
				}
			}
		}
	}
}
