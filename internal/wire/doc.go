// Package wire is the codec of KayaDB's client protocol, version 1: the
// frames that carry requests and responses on a client connection, the
// opcodes and status codes, the payload of every opcode, the ADMIN and
// CLIENT authentication prefixes, and the STATS JSON document.
//
// It owns byte layouts only. It never opens connections, never retries,
// never checks credentials against a configuration (it offers TokenEqual
// for that) and never interprets keys. It must never panic on input bytes,
// and it never allocates the length a frame announces before checking it
// against MaxFrameSize. Every decoder reads its fields in order and ignores
// bytes after the last field, as the reference implementation does, except
// the decoders of the versioned-data opcodes 68–70, which are strict; a
// payload shorter than its fields need is an error matching ErrMalformed.
// Decoded byte slices alias the input; copy them to keep them past the
// lifetime of the buffer they came from.
//
// # Frames
//
// All integers are little-endian. A request frame:
//
//	+---------------+-----------+------------------+
//	| frame_len u32 | opcode u8 | payload ...      |
//	+---------------+-----------+------------------+
//	 0               4           5
//	frame_len = 1 + len(payload)
//
// A response frame:
//
//	+---------------+------------+------------------+
//	| frame_len u32 | status u16 | payload ...      |
//	+---------------+------------+------------------+
//	 0               4            6
//	frame_len = 2 + len(payload)
//
// frame_len counts the bytes after itself. A frame_len of 0 (ErrFrameEmpty),
// a response frame_len of 1 (ErrFrameTooSmall) and a frame_len above
// MaxFrameSize, 64 MiB (ErrFrameTooLarge), are refused before a single body
// byte is read; a frame cut short is io.ErrUnexpectedEOF. All of these mean
// "close the connection": the stream can no longer be trusted to be in step.
// Requests on a connection are answered in order; several may be written
// back to back (pipelining).
//
// # Payloads
//
// bytes32 is "len u32 · len bytes" and bytes16 is "len u16 · len bytes".
//
//	op  name            request payload                              OK payload
//	 0  HELLO           client_version u16                           server_version u16
//	 1  PUT             key_len u32 · value_len u32 · key · value    (empty)
//	 2  GET             bytes32 key                                  bytes32 value
//	 3  DELETE          bytes32 key                                  (empty)
//	 4  SCAN            bytes32 prefix                               count u32 · (bytes32 key · bytes32 value)*
//	 5  HEALTH          (empty)                                      raw ASCII "leader" | "follower"
//	 6  STATS           (empty)                                      raw UTF-8 JSON (Stats)
//	 7  ADD_MEMBER      node_id u64 · bytes32 raft_addr ·            raw text "membership change proposed at index N"
//	                    bytes32 client_addr · [is_learner u8]
//	 8  REMOVE_MEMBER   node_id u64                                  raw text "membership removal proposed at index N"
//	 9  TXN_BEGIN       (empty)                                      txn_id u64 · snapshot_ts u64
//	10  TXN_OP          txn_id u64 · op u8 · bytes32 key ·           GET: bytes32 value; PUT, DELETE: (empty)
//	                    [bytes32 value, only when op = 2 PUT]
//	11  TXN_COMMIT      txn_id u64                                   commit_ts u64
//	12  TXN_ROLLBACK    txn_id u64                                   (empty)
//	13  CDC_POLL        bytes16 consumer · from_seq u64 · limit u32  count u32 · (seq u64 · op u8 · bytes32 key ·
//	                                                                 [bytes32 value, only when op = 1 put])*
//	14  CDC_CHECKPOINT  bytes16 consumer · [seq u64, KayaDB's]       (empty)
//	15–22               reserved: LIST_RANGES, SPLIT_RANGE, MERGE_RANGE, TRANSFER_LEADER,
//	                    PROMOTE_LEARNER, REBALANCE_PLAN, MOVE_RANGE, TXN_FORWARD
//
// KayaDB additions (numbers from 64 up; admin opcodes; layouts in backup.go):
//
//	64  BACKUP_BEGIN    (empty)                                      BackupInfo
//	65  BACKUP_READ     bytes16 backup_id · bytes16 file ·           bytes32 data
//	                    offset u64 · length u32
//	66  BACKUP_END      bytes16 backup_id                            (empty)
//	67  BACKUP_STATUS   bytes16 backup_id                            BackupInfo
//
// TXN_OP kinds are 1 get, 2 put, 3 delete; CDC event ops are 1 put,
// 2 delete.
//
// # Transactions (9–12)
//
// An interactive transaction lives on the leader that answered TXN_BEGIN;
// every later request of it goes to that node. Bytes of one, txn 1 putting
// k=v (frame_len · opcode · payload; replies frame_len · status · payload):
//
//	TXN_BEGIN           01 00 00 00 09
//	  OK id 1, ts 0     12 00 00 00 00 00 | 01 00 00 00 00 00 00 00 | 00 00 00 00 00 00 00 00
//	TXN_OP put k=v      14 00 00 00 0a | 01 00 00 00 00 00 00 00 | 02 | 01 00 00 00 6b | 01 00 00 00 76
//	  OK                02 00 00 00 00 00
//	TXN_OP get k        0f 00 00 00 0a | 01 00 00 00 00 00 00 00 | 01 | 01 00 00 00 6b
//	  OK "v"            07 00 00 00 00 00 | 01 00 00 00 76
//	  miss              02 00 00 00 02 00                     (NOT_FOUND, empty body)
//	TXN_COMMIT          09 00 00 00 0b | 01 00 00 00 00 00 00 00
//	  OK ts 12          0a 00 00 00 00 00 | 0c 00 00 00 00 00 00 00
//	  conflict          12 00 00 00 03 00 | 0c 00 00 00 "txn conflict"
//	TXN_ROLLBACK        09 00 00 00 0c | 01 00 00 00 00 00 00 00
//	unknown txn 7       39 00 00 00 01 00 | 33 00 00 00 "invalid argument: unknown or finished transaction 7"
//
// The error texts are constants (MsgTxnUnknown, MsgTxnLost, MsgTxnConflict,
// …, in txn.go), byte for byte the original's where it has one.
//
// What KayaDB's server settles (package internal/txn):
//
//   - txn_id is term << 32 | counter (the original's ids count from 1):
//     unique in the cluster, so a client never reaches another client's
//     transaction. An id whose term is older than the leader's answers
//     MsgTxnLost; a finished, expired or never-begun one, and any id of
//     term 0, answers MsgTxnUnknown.
//   - TXN_OP decodes as the original: fields in order, trailing bytes
//     ignored, MsgEOFU64/MsgEOFU8/MsgEOFU32/MsgTruncated and
//     MsgTxnOpUnknownKind for what is missing or wrong; key and value
//     limits answer MsgTxnKeyTooLong and MsgTxnValueTooLong. A TXN_OP
//     that conflicts (StatusTxnConflict) leaves the transaction open.
//   - TXN_COMMIT answers the commit revision of the transaction's own
//     writes (a read-only one: its snapshot). A TXN_COMMIT sent again for
//     the same id answers the first outcome (OK with the same commit_ts,
//     or TXN_CONFLICT), on any later leader. A commit refused because its
//     snapshot fell below the retained history is TXN_CONFLICT whose body
//     begins with "txn conflict" and says so. A commit whose raft entry was
//     not applied in time answers ERROR "the outcome of committing
//     transaction N is not known yet …": send TXN_COMMIT again.
//   - Requests of transactions (9–12, 68) on one connection run in the
//     order they were sent, like PUT and DELETE.
//
// # Versioned data (68–70, KayaDB additions; data opcodes; mvcc.go)
//
//	op  name      request payload                                    OK payload
//	68  KAYA_TXN  CondTxn                                            CondTxnReply
//	69  GET_AT    read_ts u64 · bytes32 key                          bytes32 value · mod_rev u64
//	70  SCAN_AT   read_ts u64 · bytes32 prefix · bytes32 start ·     read_rev u64 · more u8 · count u32 ·
//	              limit u32                                          (bytes32 key · bytes32 value · mod_rev u64)*
//
// KAYA_TXN request (a one-shot conditional write: if every compare holds,
// the then-ops run, else the else-ops, atomically in one raft entry):
//
//	+-----------+-----------------+------------+-------------+------------+-------------+
//	| n_cmp u32 | Compare × n_cmp | n_then u32 | CondOp × .. | n_else u32 | CondOp × .. |
//	+-----------+-----------------+------------+-------------+------------+-------------+
//	  n_cmp ≤ 128 (MaxCondCompares), n_then, n_else ≤ 128 (MaxCondOps)
//
//	Compare:  +-----------+-------+---------------+--------------------------------------+
//	          | target u8 | op u8 | bytes32 key   | operand                              |
//	          +-----------+-------+---------------+--------------------------------------+
//	          target 1 EXISTS (no operand; op = exists, != does not exist)
//	                 2 VALUE  (operand bytes32 value; false whenever the key is absent)
//	                 3 MOD    (operand mod_rev u64; an absent key has mod revision 0)
//	          op     1 =  2 !=  3 <  4 >  5 <=  6 >=
//	CondOp:   +---------+-------------+--------------------------------------+
//	          | kind u8 | bytes32 key | bytes32 value, only when kind = put  |
//	          +---------+-------------+--------------------------------------+
//	          kind   1 get  2 put  3 delete
//
// KAYA_TXN OK reply:
//
//	+--------------+--------------+-------+-------------------------------------+
//	| succeeded u8 | revision u64 | n u32 | CondResult × n (the branch that ran) |
//	+--------------+--------------+-------+-------------------------------------+
//	  revision: the commit revision of the branch's writes, 0 if it wrote nothing
//
//	CondResult: kind u8 · get:    found u8 · [bytes32 value · mod_rev u64, when found = 1]
//	                      put:    (nothing)
//	                      delete: found u8 (1: the key existed and was deleted)
//
// Example: if value("k") = "v" then put k=w else get k (a compare-and-swap):
//
//	request  2a 00 00 00 44 | 01 00 00 00 | 02 01 01 00 00 00 6b 01 00 00 00 76
//	                        | 01 00 00 00 | 02 01 00 00 00 6b 01 00 00 00 77
//	                        | 01 00 00 00 | 01 01 00 00 00 6b
//	swapped  10 00 00 00 00 00 | 01 | 07 00 00 00 00 00 00 00 | 01 00 00 00 | 02
//	not      1e 00 00 00 00 00 | 00 | 00 00 00 00 00 00 00 00 | 01 00 00 00 | 01 01 01 00 00 00 78 05 00 00 00 00 00 00 00
//
// read_ts 0 is the latest revision, read linearizably; GET_AT's read_ts
// ReadTSLocal (all ones) is the serving node's latest applied state,
// without a ReadIndex round (a serializable read, for readers that
// validate later).
//
// GET_AT at revision 5 of k, and its OK reply (value v, mod revision 3):
//
//	request  0e 00 00 00 45 | 05 00 00 00 00 00 00 00 | 01 00 00 00 6b
//	reply    0f 00 00 00 00 00 | 01 00 00 00 76 | 03 00 00 00 00 00 00 00
//
// SCAN_AT reply (read_rev, more, then the SCAN items each followed by its
// mod revision); a page ends where limit or the server's cap stopped it,
// and the next one is asked at read_ts = read_rev from the last key + 0x00:
//
//	+--------------+---------+-----------+----------------------------------------------------+
//	| read_rev u64 | more u8 | count u32 | (bytes32 key · bytes32 value · mod_rev u64) × count |
//	+--------------+---------+-----------+----------------------------------------------------+
//
// # Change feeds and watches (71–73, KayaDB additions; data opcodes; watch.go)
//
// A CDC event's seq and a watch event's revision are the commit revision
// (docs/design/cdc-and-watch.md). CDC_POLL and CDC_CHECKPOINT keep the
// original's bytes; CDC_CHECKPOINT may carry the position to store after
// the consumer (the original's decoder ignores it).
//
//	op  name          request payload                                  OK payload
//	71  WATCH_CREATE  kind u8 (1 key, 2 prefix) · start_revision u64 ·  watch_id u64 · start_revision u64
//	                  progress_ms u32 · bytes32 key
//	72  WATCH_CANCEL  watch_id u64                                     (empty)
//	73  CDC_CONSUMER  action u8 (1 get, 2 delete) · bytes16 consumer   get: seq u64 (NOT_FOUND: none);
//	                                                                   delete: (empty)
//
// start_revision 0 is "now"; the reply names the first revision the watch
// delivers. After it, the server pushes frames with status 65
// WATCH_EVENT between its replies; they answer no request (a client pairs
// every other frame with its oldest outstanding request, as before), and
// only a connection that created a watch receives them:
//
//	+---------------+--------------------+---------------+---------------+----------+------+
//	| frame_len u32 | status u16 = 65    | watch_id u64  | kind u8       | rev u64  | body |
//	+---------------+--------------------+---------------+---------------+----------+------+
//	kind 1 EVENTS    body: count u32 · (revision u64 · op u8 · bytes32 key ·
//	                 [bytes32 value, op 1 put])*  (the CDC event layout; whole
//	                 commits only; rev is the newest revision in the frame)
//	kind 2 PROGRESS  body: (none); every change up to rev was sent
//	kind 3 CANCELED  body: reason u8 · bytes32 message; reason 1 compacted
//	                 (rev: the oldest start revision available), 2 slow (the
//	                 watch's buffer overflowed; rev: where to resume),
//	                 3 stopping (rev: where to resume, elsewhere)
//
// Watch a/ from revision 5 with progress every second, then an event frame
// (put a/x=1 and delete a/y, both at revision 7) and a progress frame:
//
//	WATCH_CREATE     14 00 00 00 47 | 02 | 05 00 00 00 00 00 00 00 | e8 03 00 00 | 02 00 00 00 61 2f
//	  OK id 1 from 5 12 00 00 00 00 00 | 01 00 00 00 00 00 00 00 | 05 00 00 00 00 00 00 00
//	WATCH_EVENT      3c 00 00 00 41 00 | 01 00 00 00 00 00 00 00 | 01 | 07 00 00 00 00 00 00 00
//	                 | 02 00 00 00 | 07 00 00 00 00 00 00 00 01 03 00 00 00 61 2f 78 01 00 00 00 31
//	                 | 07 00 00 00 00 00 00 00 02 03 00 00 00 61 2f 79
//	  progress at 9  13 00 00 00 41 00 | 01 00 00 00 00 00 00 00 | 02 | 09 00 00 00 00 00 00 00
//	WATCH_CANCEL 1   09 00 00 00 48 | 01 00 00 00 00 00 00 00
//	CDC_CHECKPOINT backup at 12   11 00 00 00 0e | 06 00 62 61 63 6b 75 70 | 0c 00 00 00 00 00 00 00
//	CDC_CONSUMER get backup       0a 00 00 00 49 | 01 | 06 00 62 61 63 6b 75 70
//	  OK 12                       0a 00 00 00 00 00 | 0c 00 00 00 00 00 00 00
//
// A CDC_POLL from a position below the retained history answers status 64
// with MsgCDCCompacted, a WATCH_CREATE from below it with
// MsgWatchCompacted (ParseCDCCompacted recovers both numbers). The
// decoders of 71–73 and of WATCH_EVENT are strict.
//
// A read below the retained history answers status 64 COMPACTED with the
// error body "mvcc: revision R is compacted; the oldest readable revision
// is H" (MsgCompacted; ParseCompacted); above the newest revision, status 1
// with MsgFutureRevision. The decoders of 68–70 are strict: trailing bytes
// are an error.
//
// Non-OK responses carry:
//
//	status  name              payload
//	 0      OK                opcode-specific (above)
//	 1      INVALID_ARGUMENT  bytes32 UTF-8 message
//	 2      NOT_FOUND         (empty)
//	 3      TXN_CONFLICT      bytes32 UTF-8 message ("txn conflict")
//	 9      ERROR             bytes32 UTF-8 message
//	10      NOT_LEADER        raw UTF-8 "host:port" of the leader's client address, no length; empty if unknown
//	11      RANGE_MOVED       reserved (a LIST_RANGES body)
//	64      COMPACTED         bytes32 UTF-8 message (MsgCompacted; a KayaDB addition)
//	65      WATCH_EVENT       pushed, answers no request (WatchEvent; a KayaDB addition)
//
// Clients treat any other status as ERROR.
//
// # Authentication prefixes
//
// They sit at the start of the opcode's payload, before its body. Admin
// opcodes (7, 8, 18–22, 64–67), when the server has an operator token:
//
//	"ADMIN\0" (41 44 4d 49 4e 00) · token_len u16 · token · opcode u8 · inner payload
//
// The embedded opcode must equal the frame's opcode (MsgAdminMismatch).
// Data opcodes (1–4, 6, 9–17, 68–73), when the server has a client token:
//
//	"CLIENT\0" (43 4c 49 45 4e 54 00) · token_len u16 · token · inner payload
//
// Without a token the client sends the bare inner payload. HELLO and
// HEALTH are never prefixed.
package wire
