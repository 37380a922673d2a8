package server

import (
	"context"
	"time"

	"github.com/kayadb/kayadb/engine"
)

// Shutdown stops the node gracefully, as SIGTERM does: it accepts no new
// clients, a leader hands its leadership to the most caught-up reachable
// voter (so the cluster does not wait an election timeout for a new one),
// requests in flight finish or fail, the engine flushes its memtable (a
// faster next start), and then Close runs. ctx bounds the graceful steps;
// Close always runs.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.clientLn != nil {
		_ = s.clientLn.Close()
	}
	s.handOff(ctx)
	s.waitInflight(ctx)
	if s.store != nil {
		if err := s.store.DB(func(db *engine.DB) error { return db.Flush() }); err != nil {
			s.log.Warn("flushing the engine before shutdown failed; the next start replays the WAL", "err", err)
		}
	}
	return s.Close()
}

// handOff moves leadership away from this node, if it leads, to the voter
// whose log is the most complete among those heard from recently.
func (s *Server) handOff(ctx context.Context) {
	if !s.node.IsLeader() {
		return
	}
	prog, _, err := s.node.Progress(ctx)
	if err != nil {
		return
	}
	voters, _ := s.voterSets()
	best, bestMatch := uint64(0), uint64(0)
	for id, p := range prog {
		if id == s.cfg.NodeID || !voters[id] || !p.RecentActive {
			continue
		}
		if best == 0 || p.Match > bestMatch {
			best, bestMatch = id, p.Match
		}
	}
	if best == 0 {
		s.log.Info("shutting down as leader with no reachable voter to hand leadership to")
		return
	}
	s.log.Info("handing leadership over before shutting down", "to", best)
	budget := 2 * s.node.ElectionTimeout()
	tctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	s.node.TransferLeadership(best)
	for {
		if lead := s.node.Leader(); lead != 0 && lead != s.cfg.NodeID {
			s.log.Info("leadership handed over", "to", lead)
			return
		}
		select {
		case <-tctx.Done():
			s.log.Warn("leadership hand-over did not complete in time; the others will elect a leader", "to", best)
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitInflight waits until every request read so far has its reply.
func (s *Server) waitInflight(ctx context.Context) {
	for s.inflight.Load() > 0 {
		select {
		case <-ctx.Done():
			s.log.Warn("requests still in flight at the shutdown deadline; they fail", "requests", s.inflight.Load())
			return
		case <-time.After(5 * time.Millisecond):
		}
	}
}
