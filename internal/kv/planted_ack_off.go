//go:build !kaya_planted_early_ack

package kv

// plantedEarlyAck is false in every real build (see planted_ack_on.go).
const plantedEarlyAck = false
