package cli

import (
	"os"

	"github.com/kayadb/kayadb/internal/crypt"
	"github.com/kayadb/kayadb/internal/lsm/sstable"
)

// scanTable reports the key of one SSTable: its footer names it; opening
// the table with the keyring reads its index and meta blocks, so a wrong
// key under that id fails too.
func scanTable(path string, sealer *crypt.Sealer) verifiedFile {
	vf := verifiedFile{Path: path, Keys: []crypt.KeyID{}}
	f, err := os.Open(path)
	if err != nil {
		vf.Error = err.Error()
		return vf
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		vf.Error = err.Error()
		return vf
	}
	id, encrypted, err := sstable.TableEncryption(f, st.Size(), path)
	if err != nil {
		vf.Error = err.Error()
		return vf
	}
	if !encrypted {
		vf.Plain = true
	} else {
		vf.Keys = append(vf.Keys, id)
	}
	r, err := sstable.Open(f, st.Size(), sstable.ReaderOptions{FileName: path, Sealer: sealer})
	if err != nil {
		vf.Error = err.Error()
		return vf
	}
	// The reader owns f now; closing it twice is harmless for *os.File.
	_ = r.Close()
	return vf
}
