//go:build kaya_planted_watch_early

package feed

// plantedWatchEarly makes the hub deliver a put to its watchers as soon as
// the leader proposes it, before it commits: a deliberate bug for the
// harness's negative control (a watcher sees writes that never commit, and
// sees committed ones twice). Never ship a build with this tag.
const plantedWatchEarly = true
