package peer

import (
	"container/list"
	"sync"
	"time"

	"github.com/vipd/vipd/internal/clock"
)

const (
	// nonceTTL is how long after issue the server accepts a nonce.
	nonceTTL = 10 * time.Second
	// maxNonces bounds the outstanding nonces of each kind (issued by
	// /v1/nonce, issued in responses): 4096 in all.
	maxNonces = 2048
)

// nonceStore holds the outstanding nonces of one kind, oldest first. The
// clock never goes back, so the oldest are also the first to expire.
type nonceStore struct {
	clk clock.Clock
	ttl time.Duration
	max int

	mu    sync.Mutex
	byVal map[nonce]*list.Element // of *issued
	order *list.List
}

type issued struct {
	n  nonce
	at time.Time
}

func newNonceStore(clk clock.Clock, ttl time.Duration, max int) *nonceStore {
	return &nonceStore{clk: clk, ttl: ttl, max: max, byVal: map[nonce]*list.Element{}, order: list.New()}
}

// issue makes a fresh nonce outstanding, evicting the oldest if the store
// is full.
func (s *nonceStore) issue() nonce {
	n := newNonce()
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(now)
	for s.order.Len() >= s.max {
		s.removeLocked(s.order.Front())
	}
	s.byVal[n] = s.order.PushBack(&issued{n: n, at: now})
	return n
}

// consume reports whether n was outstanding and not expired; either way n
// is outstanding no more.
func (s *nonceStore) consume(n nonce) bool {
	now := s.clk.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.byVal[n]
	if !ok {
		return false
	}
	s.removeLocked(e)
	return !now.After(e.Value.(*issued).at.Add(s.ttl))
}

// outstanding counts the nonces held, expired ones included until the next
// issue drops them.
func (s *nonceStore) outstanding() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.order.Len()
}

func (s *nonceStore) expireLocked(now time.Time) {
	for e := s.order.Front(); e != nil && now.After(e.Value.(*issued).at.Add(s.ttl)); e = s.order.Front() {
		s.removeLocked(e)
	}
}

func (s *nonceStore) removeLocked(e *list.Element) {
	delete(s.byVal, e.Value.(*issued).n)
	s.order.Remove(e)
}
