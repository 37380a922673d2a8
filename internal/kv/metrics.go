package kv

// PendingWrites returns how many writes proposed through this store wait
// for their entry to be applied (or to fail).
func (s *Store) PendingWrites() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.waiters)
}
