//go:build kaya_planted_stale_reads

package kv

// plantedStaleReads makes every node, leader or not, serve GET and SCAN
// from its local state without a ReadIndex round: a deliberate
// linearizability bug for the harness's negative control. Never ship a
// build with this tag.
const plantedStaleReads = true
