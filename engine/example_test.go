package engine_test

import (
	"fmt"
	"log"
	"os"

	"github.com/kayadb/kayadb/engine"
)

// Example shows embedded use: open a database in a directory, write with a
// durable batch, read a key, iterate a key range, and take a checkpoint.
func Example() {
	dir, err := os.MkdirTemp("", "kaya-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	db, err := engine.Open(dir+"/db", nil) // nil: default options
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// A batch is atomic; engine.Sync returns only after an fdatasync.
	b := db.NewBatch()
	b.Set([]byte("user:1"), []byte("Ada"))
	b.Set([]byte("user:2"), []byte("Grace"))
	b.Set([]byte("zone:eu"), []byte("1"))
	if err := b.Commit(engine.Sync); err != nil {
		log.Fatal(err)
	}

	v, err := db.Get([]byte("user:1"))
	fmt.Println(string(v), err)

	// Iterate the keys with prefix "user:" (upper bound is exclusive).
	it, err := db.NewIter(&engine.IterOptions{LowerBound: []byte("user:"), UpperBound: []byte("user;")})
	if err != nil {
		log.Fatal(err)
	}
	for ok := it.First(); ok; ok = it.Next() {
		fmt.Printf("%s=%s\n", it.Key(), it.Value())
	}
	if err := it.Close(); err != nil {
		log.Fatal(err)
	}

	// A checkpoint is a consistent copy that opens like any database.
	if err := db.Checkpoint(dir + "/backup"); err != nil {
		log.Fatal(err)
	}
	// Output:
	// Ada <nil>
	// user:1=Ada
	// user:2=Grace
}
