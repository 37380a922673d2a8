package cli

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// fuzzInspect runs one inspect decoder on arbitrary bytes: it must not
// panic, and must either succeed or fail with a classified error.
// The input is written under the seed file's name (so the log number in the
// name matches the seed's chunks).
func fuzzInspect(f *testing.F, seed func(fx fixture) string,
	inspectFn func(path string) (any, error), render func(w io.Writer, res any)) {
	fx := makeFixture(f)
	name := filepath.Base(seed(fx))
	b, err := os.ReadFile(seed(fx))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add(b[:len(b)-1])
	f.Add([]byte{})
	f.Add([]byte("not an engine file at all"))
	flipped := append([]byte(nil), b...)
	flipped[len(flipped)/3] ^= 0x10
	f.Add(flipped)
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		res, err := inspectFn(path)
		if err != nil {
			var ce *cliError
			if !errors.As(err, &ce) {
				t.Fatalf("unclassified error %T: %v", err, err)
			}
			switch ce.code {
			case ExitCorruption, ExitInvalidArgument:
			default:
				t.Fatalf("unexpected exit code %d: %v", ce.code, err)
			}
		}
		if res != nil {
			render(io.Discard, res)
			if err := writeJSON(io.Discard, res); err != nil {
				t.Fatal(err)
			}
		}
	})
}

func FuzzInspectWAL(f *testing.F) {
	fuzzInspect(f, func(fx fixture) string { return fx.wal },
		func(p string) (any, error) {
			res, err := inspectWAL(p, inspectFlags{logNum: -1, values: true})
			if res == nil {
				return nil, err
			}
			return res, err
		},
		func(w io.Writer, res any) { renderWAL(w, res.(*walResult)) })
}

func FuzzInspectManifest(f *testing.F) {
	fuzzInspect(f, func(fx fixture) string { return fx.manifest },
		func(p string) (any, error) {
			res, err := inspectManifest(p, inspectFlags{logNum: -1})
			if res == nil {
				return nil, err
			}
			return res, err
		},
		func(w io.Writer, res any) { renderManifest(w, res.(*manifestResult)) })
}

func FuzzInspectSSTable(f *testing.F) {
	fuzzInspect(f, func(fx fixture) string { return fx.sst },
		func(p string) (any, error) {
			res, err := inspectSSTable(p, inspectFlags{logNum: -1, entries: true, values: true})
			if res == nil {
				return nil, err
			}
			return res, err
		},
		func(w io.Writer, res any) { renderSSTable(w, res.(*sstResult)) })
}
