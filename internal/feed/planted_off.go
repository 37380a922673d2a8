//go:build !kaya_planted_watch_early

package feed

// plantedWatchEarly: see planted_on.go.
const plantedWatchEarly = false
