package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/vipd/vipd/election"
)

// Errors callers (and tests) branch on.
var (
	ErrUnknownGroup = errors.New("vipctl: unknown group")
	ErrUnknownNode  = errors.New("vipctl: unknown node")
	ErrNotHealthy   = errors.New("vipctl: target not healthy")
	ErrNoHolder     = errors.New("vipctl: group has no holder")
	// ErrHandoverFailed: the holder released, but the target did not take
	// over (frozen, just killed, cut off); the old holder reclaimed the
	// group, or another node took it.
	ErrHandoverFailed = errors.New("vipctl: handover failed")
)

// HandoverResult says what a handover did.
type HandoverResult struct {
	From, To string
	Took     time.Duration // request written -> leader key names the new holder
}

// handoverOutcome decides what a new leader key means for a handover from
// from to target (the node expected to take over): done, or failed with
// the reason. A handover to nobody in particular succeeds with any other
// node.
func handoverOutcome(from, target, requested, newHolder string) error {
	switch {
	case newHolder == from:
		return fmt.Errorf("%w: %s did not take over; %s reclaimed the group", ErrHandoverFailed, target, from)
	case requested != "" && newHolder != requested:
		return fmt.Errorf("%w: %s did not take over; %s did", ErrHandoverFailed, requested, newHolder)
	}
	return nil
}

func findGroup(st []GroupStatus, name string) (GroupStatus, bool) {
	for _, g := range st {
		if g.Group == name {
			return g, true
		}
	}
	return GroupStatus{}, false
}

// Handover asks group's holder to hand over, to `to` or (if empty) the best
// other healthy candidate, and waits until another node holds it. The
// request lives on a lease of TTL hold, during which the old holder does
// not preempt back.
func Handover(ctx context.Context, cli *clientv3.Client, keys election.Keys, group, to string, hold time.Duration) (HandoverResult, error) {
	st, err := Status(ctx, cli, keys)
	if err != nil {
		return HandoverResult{}, err
	}
	g, ok := findGroup(st, group)
	if !ok {
		return HandoverResult{}, fmt.Errorf("%w %q (known: %v)", ErrUnknownGroup, group, groupNames(st))
	}
	if g.Holder == "" {
		return HandoverResult{}, fmt.Errorf("%w: %s is vacant", ErrNoHolder, group)
	}
	healthy := func(c CandidateStatus) bool {
		return c.Node != g.Holder && c.State != string(election.StateFault) && !c.Drained
	}
	if to != "" {
		i := slices.IndexFunc(g.Candidates, func(c CandidateStatus) bool { return c.Node == to })
		switch {
		case to == g.Holder:
			return HandoverResult{}, fmt.Errorf("vipctl: %s already holds %s", to, group)
		case i < 0:
			return HandoverResult{}, fmt.Errorf("%w %q in group %s (candidates: %v)", ErrUnknownNode, to, group, candidateNames(g))
		case !healthy(g.Candidates[i]):
			c := g.Candidates[i]
			return HandoverResult{}, fmt.Errorf("%w: %s is %s (failing: %v, drained: %v)", ErrNotHealthy, to, c.State, c.Failing, c.Drained)
		}
	} else if !slices.ContainsFunc(g.Candidates, healthy) {
		return HandoverResult{}, fmt.Errorf("%w: no other healthy candidate for %s (candidates: %v)", ErrNotHealthy, group, candidateNames(g))
	}
	// The node expected to take over: the named one, or the best other
	// healthy candidate, as the holder and the candidates rank it
	// (election.HandoverTarget; it claims at rank 0 either way).
	target := to
	if target == "" {
		cands := make([]election.Candidate, 0, len(g.Candidates))
		for _, c := range g.Candidates {
			cands = append(cands, election.Candidate{Node: c.Node, Priority: c.Priority, State: election.State(c.State), Drained: c.Drained, Waiting: c.Waiting})
		}
		target, _ = election.HandoverTarget(&election.Handover{From: g.Holder}, cands)
	}

	secs := max(int64(hold/time.Second), 1)
	lease, err := cli.Grant(ctx, secs)
	if err != nil {
		return HandoverResult{}, fmt.Errorf("vipctl: grant handover lease: %w", err)
	}
	req, _ := json.Marshal(election.Handover{From: g.Holder, To: to})
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	start := time.Now()
	put, err := cli.Put(ctx, keys.Handover(group), string(req), clientv3.WithLease(lease.ID))
	if err != nil {
		return HandoverResult{}, fmt.Errorf("vipctl: write handover request: %w", err)
	}
	// Wait for the old holder's key to go and a new one to be created:
	// by the target (done), by another node, or by the old holder again
	// when the target never claimed (it reclaims once, after the others).
	wch := cli.Watch(wctx, keys.Leader(group), clientv3.WithRev(put.Header.Revision+1))
	released := false
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return HandoverResult{}, fmt.Errorf("vipctl: watch %s: %w", group, err)
		}
		for _, ev := range resp.Events {
			switch {
			case ev.Type == clientv3.EventTypeDelete:
				released = true
			case ev.IsCreate() && (released || string(ev.Kv.Value) != g.Holder):
				res := HandoverResult{From: g.Holder, To: string(ev.Kv.Value), Took: time.Since(start)}
				return res, handoverOutcome(g.Holder, target, to, res.To)
			}
		}
	}
	return HandoverResult{}, fmt.Errorf("%w: %s did not hand over %s in time (%v)", ErrHandoverFailed, g.Holder, group, context.Cause(ctx))
}

// Drain marks node drained and waits until it holds no group. The mark has
// no lease, so it survives restarts of vipd and of vipctl.
func Drain(ctx context.Context, cli *clientv3.Client, keys election.Keys, node string) (wasHolding []string, err error) {
	st, err := Status(ctx, cli, keys)
	if err != nil {
		return nil, err
	}
	known := false
	for _, g := range st {
		known = known || slices.ContainsFunc(g.Candidates, func(c CandidateStatus) bool { return c.Node == node })
		if g.Holder == node {
			wasHolding = append(wasHolding, g.Group)
		}
	}
	if !known {
		return nil, fmt.Errorf("%w %q: it has no candidate record in any group", ErrUnknownNode, node)
	}
	mark, _ := json.Marshal(map[string]string{"since": time.Now().UTC().Format(time.RFC3339)})
	if _, err := cli.Put(ctx, keys.Drained(node), string(mark)); err != nil {
		return nil, fmt.Errorf("vipctl: write drain mark: %w", err)
	}
	for {
		st, err := Status(ctx, cli, keys)
		if err != nil {
			return wasHolding, err
		}
		if !slices.ContainsFunc(st, func(g GroupStatus) bool { return g.Holder == node }) {
			return wasHolding, nil
		}
		select {
		case <-ctx.Done():
			return wasHolding, fmt.Errorf("vipctl: %s still holds a group: %w", node, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Undrain removes node's drain mark.
func Undrain(ctx context.Context, cli *clientv3.Client, keys election.Keys, node string) error {
	resp, err := cli.Delete(ctx, keys.Drained(node))
	if err != nil {
		return fmt.Errorf("vipctl: delete drain mark: %w", err)
	}
	if resp.Deleted == 0 {
		return fmt.Errorf("%w %q: it is not drained", ErrUnknownNode, node)
	}
	return nil
}

func groupNames(st []GroupStatus) []string {
	var out []string
	for _, g := range st {
		out = append(out, g.Group)
	}
	return out
}

func candidateNames(g GroupStatus) []string {
	var out []string
	for _, c := range g.Candidates {
		out = append(out, c.Node)
	}
	return out
}
