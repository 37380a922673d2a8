package wire

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// Online backup: KayaDB additions to the protocol (opcodes 64–67, all
// admin). A backup is an engine checkpoint the leader takes after a read
// barrier; the client lists its files, reads them in chunks and ends it.
//
//	op  name            request payload                                  OK payload
//	64  BACKUP_BEGIN    (empty)                                          BackupInfo
//	65  BACKUP_READ     bytes16 backup_id · bytes16 file · offset u64 ·  bytes32 data
//	                    length u32 (1 … 4 MiB)
//	66  BACKUP_END      bytes16 backup_id                                (empty)
//	67  BACKUP_STATUS   bytes16 backup_id                                BackupInfo
//
//	BackupInfo: bytes16 backup_id · node_id u64 · applied_index u64 · applied_term u64 ·
//	            created_unix_ms u64 · ready u8 · count u32 · (bytes16 name · size u64 · sha256 [32]u8)*
//
// count is 0 while ready is 0 (the server is still computing the
// checksums); the client then asks BACKUP_STATUS until ready is 1.

// Limits of the backup opcodes.
const (
	// MaxBackupChunk is the largest length a BACKUP_READ may ask for: 4 MiB.
	MaxBackupChunk = 4 << 20
	// BackupIDLen is the length of a backup id: 16 lowercase hex digits.
	BackupIDLen = 16
)

// backupFileFixed is the size of a BackupInfo file entry besides its name.
const backupFileFixed = 2 + 8 + 32

// BackupFile is one file of a backup.
type BackupFile struct {
	// Name is a plain file name (no directory part).
	Name string
	// Size is the file's length in bytes.
	Size uint64
	// SHA256 is the SHA-256 digest of the file's contents.
	SHA256 [32]byte
}

// BackupInfo is the OK payload of BACKUP_BEGIN and BACKUP_STATUS.
type BackupInfo struct {
	// ID names the backup in later requests (BackupIDLen hex digits).
	ID string
	// NodeID is the node that holds the backup: later requests for it must
	// go to that node.
	NodeID uint64
	// AppliedIndex and AppliedTerm are the raft index and term the
	// checkpoint holds: every write acknowledged before BACKUP_BEGIN was
	// received is at or below AppliedIndex.
	AppliedIndex, AppliedTerm uint64
	// CreatedUnixMs is when the checkpoint was taken (server clock,
	// milliseconds since the Unix epoch).
	CreatedUnixMs uint64
	// Ready is false while the server is still computing checksums; Files
	// is then empty.
	Ready bool
	// Files lists the checkpoint's files, sorted by name.
	Files []BackupFile
}

// BackupRead is a BACKUP_READ request.
type BackupRead struct {
	ID     string
	File   string
	Offset uint64
	Length uint32
}

// ValidBackupID reports whether id has the form of a backup id.
func ValidBackupID(id string) bool {
	if len(id) != BackupIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ValidBackupFileName reports whether name can be the name of a backup
// file: a plain, non-empty name without a directory part, not "." or "..",
// without NUL, slashes or backslashes, at most 255 bytes. (Servers also
// check that the name is one of the backup's files.)
func ValidBackupFileName(name string) bool {
	return name != "" && name != "." && name != ".." && len(name) <= 255 &&
		!strings.ContainsAny(name, "/\\\x00")
}

// AppendBackupInfo appends a BackupInfo payload. Names longer than
// MaxTokenSize are cut (servers never produce them).
func AppendBackupInfo(dst []byte, b *BackupInfo) []byte {
	dst = appendString16(dst, b.ID)
	dst = binary.LittleEndian.AppendUint64(dst, b.NodeID)
	dst = binary.LittleEndian.AppendUint64(dst, b.AppliedIndex)
	dst = binary.LittleEndian.AppendUint64(dst, b.AppliedTerm)
	dst = binary.LittleEndian.AppendUint64(dst, b.CreatedUnixMs)
	ready := byte(0)
	if b.Ready {
		ready = 1
	}
	dst = append(dst, ready)
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(b.Files)))
	for _, f := range b.Files {
		dst = appendString16(dst, f.Name)
		dst = binary.LittleEndian.AppendUint64(dst, f.Size)
		dst = append(dst, f.SHA256[:]...)
	}
	return dst
}

// DecodeBackupInfo decodes a BackupInfo payload. A count that the payload
// cannot hold is refused before anything is allocated; file names must be
// valid UTF-8 (their shape is the caller's to check, ValidBackupFileName).
func DecodeBackupInfo(p []byte) (*BackupInfo, error) {
	d := decoder{msg: "backup info", p: p}
	b := &BackupInfo{}
	var err error
	if b.ID, err = d.text16("backup_id"); err != nil {
		return nil, err
	}
	if b.NodeID, err = d.u64("node_id"); err != nil {
		return nil, err
	}
	if b.AppliedIndex, err = d.u64("applied_index"); err != nil {
		return nil, err
	}
	if b.AppliedTerm, err = d.u64("applied_term"); err != nil {
		return nil, err
	}
	if b.CreatedUnixMs, err = d.u64("created_unix_ms"); err != nil {
		return nil, err
	}
	ready, err := d.u8("ready")
	if err != nil {
		return nil, err
	}
	switch ready {
	case 0:
	case 1:
		b.Ready = true
	default:
		return nil, fmt.Errorf("%w: backup info: ready is %d, want 0 or 1", ErrMalformed, ready)
	}
	count, err := d.u32("count")
	if err != nil {
		return nil, err
	}
	if uint64(count)*backupFileFixed > uint64(d.rest()) {
		return nil, fmt.Errorf("%w: backup info: count %d needs at least %d bytes, payload has %d",
			ErrMalformed, count, uint64(count)*backupFileFixed, d.rest())
	}
	if !b.Ready && count != 0 {
		return nil, fmt.Errorf("%w: backup info: %d files listed while not ready", ErrMalformed, count)
	}
	b.Files = make([]BackupFile, 0, count)
	for i := uint32(0); i < count; i++ {
		var f BackupFile
		if f.Name, err = d.text16("name"); err != nil {
			return nil, fmt.Errorf("%w (file %d of %d)", err, i, count)
		}
		if f.Size, err = d.u64("size"); err != nil {
			return nil, fmt.Errorf("%w (file %d of %d)", err, i, count)
		}
		sum, err := d.raw("sha256", 32)
		if err != nil {
			return nil, fmt.Errorf("%w (file %d of %d)", err, i, count)
		}
		copy(f.SHA256[:], sum)
		b.Files = append(b.Files, f)
	}
	return b, nil
}

// AppendBackupID appends a BACKUP_END or BACKUP_STATUS request payload:
// bytes16 backup_id.
func AppendBackupID(dst []byte, id string) []byte { return appendString16(dst, id) }

// DecodeBackupID decodes a BACKUP_END or BACKUP_STATUS request payload.
// Whether the id has the right shape is the caller's to check
// (ValidBackupID).
func DecodeBackupID(p []byte) (string, error) {
	d := decoder{msg: "backup request", p: p}
	return d.text16("backup_id")
}

// AppendBackupRead appends a BACKUP_READ request payload: bytes16
// backup_id · bytes16 file · offset u64 · length u32.
func AppendBackupRead(dst []byte, r BackupRead) []byte {
	dst = appendString16(dst, r.ID)
	dst = appendString16(dst, r.File)
	dst = binary.LittleEndian.AppendUint64(dst, r.Offset)
	return binary.LittleEndian.AppendUint32(dst, r.Length)
}

// DecodeBackupRead decodes a BACKUP_READ request payload. Limits (length
// 1 … MaxBackupChunk, the file name, the offset) are the caller's to check.
func DecodeBackupRead(p []byte) (BackupRead, error) {
	d := decoder{msg: "BACKUP_READ request", p: p}
	var r BackupRead
	var err error
	if r.ID, err = d.text16("backup_id"); err != nil {
		return BackupRead{}, err
	}
	if r.File, err = d.text16("file"); err != nil {
		return BackupRead{}, err
	}
	if r.Offset, err = d.u64("offset"); err != nil {
		return BackupRead{}, err
	}
	if r.Length, err = d.u32("length"); err != nil {
		return BackupRead{}, err
	}
	return r, nil
}

// AppendBackupData appends a BACKUP_READ OK payload: bytes32 data. It is
// shorter than the length asked for only at the end of the file (empty at
// the end).
func AppendBackupData(dst, data []byte) []byte { return appendBytes32(dst, data) }

// DecodeBackupData decodes a BACKUP_READ OK payload. The data aliases p.
func DecodeBackupData(p []byte) ([]byte, error) {
	d := decoder{msg: "BACKUP_READ reply", p: p}
	return d.bytes32("data")
}
