package election

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdtest"
)

// The membership record of an address (design §2.9): written with the
// claim, guarded by the ModRevision the acquirer saw, rewritten only
// under the claim, deleted by a graceful resign, and left by an expiry.
func TestMembershipRecords(t *testing.T) {
	cli := etcdtest.Start(t).Client(t)
	ctx := t.Context()
	n1, n2 := newLeadership(t, cli, "n1"), newLeadership(t, cli, "n2")
	a := netip.MustParseAddr("10.0.0.1")
	view := NewView(cli, n1.Keys, clock.Real{}, discardLog(), func(string) {})
	vctx, stop := context.WithCancel(ctx)
	defer stop()
	go view.Run(vctx)
	members := func() Members {
		t.Helper()
		resp, err := cli.Get(ctx, n1.Keys.Members(a))
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) == 0 {
			return Members{}
		}
		m, err := parseMembers(resp.Kvs[0].Value, resp.Kvs[0].ModRevision)
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	both := map[string]string{"n1": "10.0.0.11:9843", "n2": "10.0.0.12:9843"}

	l1 := grant(t, cli)
	r, err := n1.Acquire(ctx, "A", []netip.Addr{a}, l1, both, map[netip.Addr]int64{a: 0})
	if err != nil || !r.Won {
		t.Fatalf("acquire: %+v, %v", r, err)
	}
	m := members()
	if m.ModRev != r.Claim.CreateRev || !SameNodes(m.Nodes, both) {
		t.Fatalf("record after the acquire: %+v, want %v written with the claim (rev %d)", m, both, r.Claim.CreateRev)
	}
	// The view shows it.
	deadline := time.Now().Add(5 * time.Second)
	for view.Group("A", []netip.Addr{a}).Members[a].ModRev != m.ModRev {
		if time.Now().After(deadline) {
			t.Fatalf("view never showed the record: %+v", view.Group("A", []netip.Addr{a}).Members)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Rewritten under the claim, guarded by the record's ModRevision.
	only1 := map[string]string{"n1": "10.0.0.11:9843"}
	if ok, _, err := n1.WriteMembers(ctx, r.Claim, only1, map[netip.Addr]int64{a: m.ModRev - 1}); err != nil || ok {
		t.Fatalf("write with a stale ModRevision: written %v, %v; want refused", ok, err)
	}
	ok, rev, err := n1.WriteMembers(ctx, r.Claim, only1, map[netip.Addr]int64{a: m.ModRev})
	if err != nil || !ok || members().ModRev != rev || !SameNodes(members().Nodes, only1) {
		t.Fatalf("write under the claim: %v %d %v; record %+v", ok, rev, err, members())
	}
	// Not by another claim.
	other := r.Claim
	other.CreateRev++
	if ok, _, err := n2.WriteMembers(ctx, other, both, map[netip.Addr]int64{a: rev}); err != nil || ok {
		t.Fatalf("write under another claim: written %v, %v", ok, err)
	}

	// The lease expires (revoked here): the record stays and keeps its
	// ModRevision, so an acquire that saw an older one fails on the guard
	// alone (no holder named).
	if _, err := cli.Revoke(ctx, l1); err != nil {
		t.Fatal(err)
	}
	if got := members(); got.ModRev != rev {
		t.Fatalf("record after the claim expired: %+v, want it kept", got)
	}
	l2 := grant(t, cli)
	r2, err := n2.Acquire(ctx, "A", []netip.Addr{a}, l2, both, map[netip.Addr]int64{a: m.ModRev})
	if err != nil || r2.Won || r2.Holder != "" {
		t.Fatalf("acquire with a stale view of the record: %+v, %v; want refused, no holder", r2, err)
	}
	r2, err = n1.Acquire(ctx, "A", []netip.Addr{a}, l2, both, map[netip.Addr]int64{a: rev})
	if err != nil || !r2.Won {
		t.Fatalf("acquire with the current record: %+v, %v", r2, err)
	}
	// A graceful resign deletes it with the claim.
	if err := n1.Resign(ctx, r2.Claim, true); err != nil {
		t.Fatal(err)
	}
	if got := members(); got.Present() {
		t.Fatalf("record after a graceful resign: %+v, want none", got)
	}
	// A holder without the failsafe deletes a record it finds.
	if _, err := cli.Put(ctx, n1.Keys.Members(a), `{"nodes":{"n9":""}}`); err != nil {
		t.Fatal(err)
	}
	cur := members()
	r3, err := n2.Acquire(ctx, "A", []netip.Addr{a}, grant(t, cli), nil, map[netip.Addr]int64{a: cur.ModRev})
	if err != nil || !r3.Won || members().Present() {
		t.Fatalf("acquire without members: %+v, %v, record %+v; want won and the record deleted", r3, err, members())
	}
}

func TestMembersAdmits(t *testing.T) {
	cases := []struct {
		m    Members
		node string
		want bool
	}{
		{Members{}, "n3", true},
		{Members{Nodes: map[string]string{"n1": "", "n2": ""}, ModRev: 5}, "n2", true},
		{Members{Nodes: map[string]string{"n1": "", "n2": ""}, ModRev: 5}, "n3", false},
		{Members{ModRev: 5}, "n1", false}, // malformed: admits nobody
	}
	for _, c := range cases {
		if got := c.m.Admits(c.node); got != c.want {
			t.Errorf("%+v admits %s: %v, want %v", c.m, c.node, got, c.want)
		}
	}
}
