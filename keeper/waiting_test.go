package keeper_test

import (
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

// A better node that starts (or restarts) while a worse one holds waits
// out the promise it may have given before (a lease TTL) before it may
// claim. The holder must not yield to it before then: the group would be
// vacant, the holder would claim it back after its backoff, snub the
// better node for a TTL as one that "did not take over", and the VIP would
// move three times instead of once (a bare `systemctl restart` of the
// better node, measured by the bench's restart-bare row).
func TestHolderWaitsForAChallengerThatMayClaim(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-2", Priority: 100, Peer: true, Failsafe: true})
	rec.WaitFor(t, "web-node-2", 15*time.Second)
	before := len(rec.History())
	started := time.Now()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Peer: true, Failsafe: true})
	at := rec.WaitFor(t, "web-node-1", 15*time.Second)
	if took := at.Sub(started); took < 3*time.Second {
		t.Errorf("web-node-1 bound %v after its start, before its start-up promise (3 s) ended", took)
	}
	time.Sleep(500 * time.Millisecond) // anything after the move
	moves := rec.History()[before:]
	if len(moves) != 2 || !strings.Contains(moves[0], "web-node-2 bound=false") || !strings.Contains(moves[1], "web-node-1 bound=true") {
		t.Errorf("want one move, web-node-2 to web-node-1; VIP events since web-node-1 started:\n%s", strings.Join(moves, "\n"))
	}
	if len(moves) == 2 {
		off, _ := time.Parse("15:04:05.000", strings.Fields(moves[0])[0])
		on, _ := time.Parse("15:04:05.000", strings.Fields(moves[1])[0])
		if gap := on.Sub(off); gap > 500*time.Millisecond {
			t.Errorf("VIP on nobody for %v across the move", gap)
		}
	}
	if d := rec.DualHolding(); d != 0 {
		t.Errorf("two holders for %v", d)
	}
}

// A standby re-executed in place goes on with its start-up wait where its
// previous image left it (long over here), instead of starting a new one:
// its record would say "waiting" for another TTL, restarting the holder's
// preempt_delay count for it and writing every record twice.
func TestReexecKeepsTheStartupWait(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101, Peer: true, Failsafe: true})
	spec := keepertest.Spec{Name: "web-node-2", Priority: 100, Peer: true, Failsafe: true}
	n2 := keepertest.Start(t, m, rec, spec)
	rec.WaitFor(t, "web-node-1", 15*time.Second)
	time.Sleep(3500 * time.Millisecond) // web-node-2's start-up wait is over
	cli := m.Client(t)
	key := "/vipd/groups/VI_1/candidates/web-node-2"
	resp, err := cli.Get(t.Context(), key)
	if err != nil || len(resp.Kvs) != 1 || strings.Contains(string(resp.Kvs[0].Value), `"waiting":true`) {
		t.Fatalf("web-node-2's record before the re-execution: %v %v", resp, err)
	}
	h := n2.Detach()
	spec.Host, spec.Handoff = n2.Host, &h
	wch := cli.Watch(t.Context(), key, clientv3.WithRev(resp.Header.Revision+1))
	keepertest.Start(t, m, rec, spec)
	deadline := time.After(2 * time.Second)
	for {
		select {
		case wr := <-wch:
			for _, ev := range wr.Events {
				if strings.Contains(string(ev.Kv.Value), `"waiting":true`) {
					t.Fatalf("web-node-2 says it is waiting again after its re-execution: %s", ev.Kv.Value)
				}
			}
		case <-deadline:
			return
		}
	}
}
