package scanprof

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/kayadb/kayadb/engine"
)

func TestProfile(t *testing.T) {
	db, err := engine.Open(t.TempDir(), &engine.Options{CacheSize: 1 << 30})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	v := make([]byte, 100)
	for i := range v[:50] {
		v[i] = byte(rand.Uint32())
	}
	var k []byte
	for _, i := range rand.Perm(1000000) {
		k = fmt.Appendf(k[:0], "%016d", i)
		db.Set(k, v, engine.NoSync)
	}
	db.Flush()
	scan := func() {
		it, _ := db.NewIter(nil)
		for ok := it.First(); ok; ok = it.Next() {
		}
		it.Close()
	}
	scan()
	f, _ := os.Create("/tmp/scan.prof")
	pprof.StartCPUProfile(f)
	start := time.Now()
	for i := 0; i < 20; i++ {
		scan()
	}
	pprof.StopCPUProfile()
	t.Logf("scan: %.0f keys/s", 20e6/time.Since(start).Seconds())
	if os.Getenv("READS") != "" {
		f2, _ := os.Create("/tmp/read.prof")
		pprof.StartCPUProfile(f2)
		start = time.Now()
		for i := 0; i < 500000; i++ {
			k = fmt.Appendf(k[:0], "%016d", rand.IntN(1000000))
			db.Get(k)
		}
		pprof.StopCPUProfile()
		t.Logf("read: %.0f/s", 5e5/time.Since(start).Seconds())
	}
}
