package engine

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"

	"github.com/kayadb/kayadb/internal/vfs"
)

// TestMain fails the package if any test leaves a goroutine running: every
// background goroutine of a DB must end by the time Close returns.
//
// It also makes every DB poison recycled memtable arenas, so that a reader
// that still used a recycled memtable would see garbage and fail.
func TestMain(m *testing.M) {
	debugPoisonArenas.Store(true)
	goleak.VerifyTestMain(m)
}

// TestCloseStopsGoroutines checks the same thing for one DB directly.
func TestCloseStopsGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t)
	db, err := Open(t.TempDir(), &Options{MemTableSize: 64 << 10})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3000; i++ {
		if err := db.Set([]byte(fmt.Sprintf("k%05d", i)), make([]byte, 100), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := db.Get([]byte("k")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close: %v", err)
	}
	if err := db.Set([]byte("k"), nil, NoSync); !errors.Is(err, ErrClosed) {
		t.Fatalf("Set after Close: %v", err)
	}
}

// TestConcurrentOps runs writers, readers, iterators, snapshots, flushes and
// compactions at once (run it with -race). Each writer owns a key range and
// writes increasing versions; readers check that versions never go back and
// that snapshots stay frozen.
func TestConcurrentOps(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", &Options{FS: fs, MemTableSize: 64 << 10, TargetFileSize: 16 << 10, LBaseMaxBytes: 64 << 10,
		L0CompactionThreshold: 2, CacheSize: 256 << 10})
	if err != nil {
		t.Fatal(err)
	}
	const writers, keysPerWriter, rounds = 4, 50, 40
	var wg sync.WaitGroup
	var stop atomic.Bool
	errc := make(chan error, 100)
	report := func(err error) {
		select {
		case errc <- err:
		default:
		}
	}
	key := func(w, i int) []byte { return []byte(fmt.Sprintf("w%d-k%03d", w, i)) }
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for r := 1; r <= rounds; r++ {
				b := db.NewBatch()
				for i := 0; i < keysPerWriter; i++ {
					_ = b.Set(key(w, i), []byte(fmt.Sprintf("%06d-%s", r, make([]byte, 50))))
				}
				if err := b.Commit(&WriteOptions{Sync: r%5 == 0}); err != nil {
					report(err)
					return
				}
			}
		}(w)
	}
	var readers sync.WaitGroup
	for rd := 0; rd < 3; rd++ {
		readers.Add(1)
		go func(rd int) {
			defer readers.Done()
			last := map[string]string{}
			for !stop.Load() {
				switch rd {
				case 0: // point reads never go back in time
					for w := 0; w < writers; w++ {
						k := string(key(w, 7))
						v, err := db.Get([]byte(k))
						if errors.Is(err, ErrNotFound) {
							continue
						}
						if err != nil {
							report(err)
							return
						}
						if string(v[:6]) < last[k] {
							report(fmt.Errorf("version of %s went back: %s < %s", k, v[:6], last[k]))
							return
						}
						last[k] = string(v[:6])
					}
				case 1: // a snapshot's batch is all-or-nothing and frozen
					s := db.NewSnapshot()
					read := func() (string, error) {
						it, err := s.NewIter(&IterOptions{LowerBound: []byte("w1-"), UpperBound: []byte("w1-\xff")})
						if err != nil {
							return "", err
						}
						var first string
						n := 0
						for ok := it.First(); ok; ok = it.Next() {
							v := string(it.Value()[:6])
							if n == 0 {
								first = v
							} else if v != first {
								it.Close()
								return "", fmt.Errorf("snapshot sees a torn batch: %s and %s", first, v)
							}
							n++
						}
						if n != 0 && n != keysPerWriter {
							it.Close()
							return "", fmt.Errorf("snapshot sees %d of %d keys of a batch", n, keysPerWriter)
						}
						return first, it.Close()
					}
					a, err := read()
					if err == nil {
						var b string
						b, err = read()
						if err == nil && a != b {
							err = fmt.Errorf("snapshot changed: %s then %s", a, b)
						}
					}
					_ = s.Close()
					if err != nil {
						report(err)
						return
					}
				case 2: // maintenance
					if err := db.Flush(); err != nil {
						report(err)
						return
					}
					if err := db.Compact([]byte("w2"), []byte("w3")); err != nil {
						report(err)
						return
					}
					_ = db.Metrics()
				}
			}
		}(rd)
	}
	wg.Wait()
	stop.Store(true)
	readers.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	for w := 0; w < writers; w++ {
		for i := 0; i < keysPerWriter; i++ {
			v, err := db.Get(key(w, i))
			if err != nil || string(v[:6]) != fmt.Sprintf("%06d", rounds) {
				t.Fatalf("final %s: %q %v", key(w, i), v, err)
			}
		}
	}
	if err := db.checkInvariants(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
