package main

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/vipd/vipd/e2e/testbed"
)

// writeCounter watches a vipd key prefix from the client namespace and
// counts every write by kind (leader/candidate, put/delete, node), so the
// report can say how many etcd writes each group costs in each phase.
type writeCounter struct {
	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	counts map[string]int
	first  map[string]time.Time
	last   map[string]time.Time
}

func newWriteCounter(tb *testbed.Testbed, prefix string) (*writeCounter, error) {
	ns := tb.Client.NS
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   tb.Endpoints(),
		DialTimeout: 3 * time.Second,
		Logger:      zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, "tcp", addr) // inside the client namespace, IP literals only
		})},
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &writeCounter{cli: cli, cancel: cancel, done: make(chan struct{}), counts: map[string]int{}, first: map[string]time.Time{}, last: map[string]time.Time{}}
	wch := cli.Watch(ctx, prefix+"/", clientv3.WithPrefix())
	go func() {
		defer close(w.done)
		for resp := range wch {
			now := time.Now()
			w.mu.Lock()
			for _, ev := range resp.Events {
				k := classify(prefix, string(ev.Kv.Key), ev.Type == clientv3.EventTypeDelete)
				w.counts[k]++
				if w.first[k].IsZero() {
					w.first[k] = now
				}
				w.last[k] = now
			}
			w.mu.Unlock()
		}
	}()
	return w, nil
}

// classify names a key change, e.g. "candidate put scale-2".
func classify(prefix, key string, del bool) string {
	op := "put"
	if del {
		op = "delete"
	}
	rest := strings.TrimPrefix(key, prefix+"/groups/")
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2:
		return parts[1] + " " + op
	case len(parts) == 3 && parts[1] == "candidates":
		return "candidate " + op + " " + parts[2]
	}
	return "other " + op
}

// take returns the counts since the last take and resets them.
func (w *writeCounter) take() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	c := w.counts
	w.counts = map[string]int{}
	w.first, w.last = map[string]time.Time{}, map[string]time.Time{}
	return c
}

func (w *writeCounter) close() {
	w.cancel()
	<-w.done
	w.cli.Close()
}

func formatCounts(c map[string]int, groups int) string {
	var ks []string
	total := 0
	for k, v := range c {
		ks = append(ks, k)
		total += v
	}
	sort.Strings(ks)
	var parts []string
	for _, k := range ks {
		parts = append(parts, fmt.Sprintf("%s %d", k, c[k]))
	}
	return fmt.Sprintf("%d writes (%.1f per group): %s", total, float64(total)/float64(max(groups, 1)), strings.Join(parts, ", "))
}
