package engine

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/kayadb/kayadb/internal/vfs"
)

func memOpts(fs vfs.FS) *Options {
	return &Options{FS: fs, MemTableSize: 256 << 10, TargetFileSize: 64 << 10, LBaseMaxBytes: 256 << 10, CacheSize: 1 << 20}
}

func TestBasic(t *testing.T) {
	fs := vfs.NewMem()
	db, err := Open("/db", memOpts(fs))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Get([]byte("a")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get missing: %v", err)
	}
	for i := 0; i < 5000; i++ {
		k := fmt.Sprintf("key%05d", i)
		if err := db.Set([]byte(k), []byte("value-"+k), NoSync); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Delete([]byte("key00010"), Sync); err != nil {
		t.Fatal(err)
	}
	check := func(db *DB) {
		t.Helper()
		for i := 0; i < 5000; i += 7 {
			k := fmt.Sprintf("key%05d", i)
			v, err := db.Get([]byte(k))
			if i == 10 {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("deleted key: %v %q", err, v)
				}
				continue
			}
			if err != nil || string(v) != "value-"+k {
				t.Fatalf("get %s: %q %v", k, v, err)
			}
		}
		it, err := db.NewIter(nil)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		var prev []byte
		for ok := it.First(); ok; ok = it.Next() {
			if prev != nil && bytes.Compare(prev, it.Key()) >= 0 {
				t.Fatalf("order %q %q", prev, it.Key())
			}
			prev = append(prev[:0], it.Key()...)
			n++
		}
		if err := it.Close(); err != nil {
			t.Fatal(err)
		}
		if n != 4999 {
			t.Fatalf("iterated %d keys", n)
		}
	}
	check(db)
	if err := db.Flush(); err != nil {
		t.Fatal(err)
	}
	check(db)
	if err := db.Compact(nil, nil); err != nil {
		t.Fatal(err)
	}
	check(db)
	t.Log(db.Metrics())
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db, err = Open("/db", memOpts(fs))
	if err != nil {
		t.Fatal(err)
	}
	check(db)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
