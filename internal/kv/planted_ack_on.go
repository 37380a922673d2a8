//go:build kaya_planted_early_ack

package kv

// plantedEarlyAck makes the leader acknowledge a write as soon as it is
// queued for raft, before a majority has made it durable and before it is
// applied: a deliberate bug for the harness's negative control (a read
// right after the acknowledgement may miss the write, and a crash may lose
// it). Never ship a build with this tag.
const plantedEarlyAck = true
