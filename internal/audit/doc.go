// Package audit is the node's audit log: one JSON line per client request
// (Record), written to up to three sinks — a file with size-based rotation,
// RFC 5424 syslog over UDP, and RFC 5424 syslog over TLS with RFC 5425
// octet counting.
//
// It owns the audit file and its rotated copies (audit.jsonl,
// audit.jsonl.1 … audit.jsonl.N, the oldest highest) and the connections
// to the syslog collectors. It must never hold a caller on I/O: Write
// encodes the line (no reflection) and queues it; each sink has one writer
// goroutine that takes everything queued, writes it in one go and, with
// FsyncAlways, fdatasyncs it once (group commit: the lines of many
// requests share an fsync; no request waits for it). The package imports
// only the standard library and internal/vfs.
//
// Bounds. Each sink's queue holds at most Options.QueueLines lines and
// Options.QueueBytes bytes; a line is at most MaxLineBytes. A line that
// finds a queue full is dropped and counted, unless Write is asked to
// keep it (admin operations, authentication failures): then Write waits
// for room, at most Options.KeepWait, so that a dead sink cannot hang a
// request for ever.
//
// Failure. A write, fsync, rotation, dial or send error marks the sink
// failing (logged once per episode, counted by reason); the writer keeps
// the lines it could not write and retries every Options.RetryInterval,
// so nothing queued is lost while the sink recovers; lines that arrive
// meanwhile wait in the queue up to its bound. Healthy reports whether
// every sink is writing and has room: the server refuses requests while
// it is not, when the operator asked for that (--audit-required). A file
// write that fails part way is cut back to the last whole line before
// the retry, so a line is never written twice or torn in the file; the
// syslog sinks deliver at least once (a line sent just before a TLS
// connection broke may be sent again).
//
// Lock order: a sink's mu is a leaf; it is never held across I/O.
package audit
