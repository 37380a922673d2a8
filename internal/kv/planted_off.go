//go:build !kaya_planted_stale_reads

package kv

// plantedStaleReads is false in every real build. The Jepsen-style
// harness builds a server with the kaya_planted_stale_reads tag to prove
// that its checker catches a node serving reads without ReadIndex.
const plantedStaleReads = false
