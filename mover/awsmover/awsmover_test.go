package awsmover

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/ec2fake"
	"github.com/vipd/vipd/keeper"
)

// provider is the fake EC2 with two instances, an Elastic IP and a route
// table, on loopback, with each instance's metadata service.
type provider struct {
	ec2  *ec2fake.Server
	api  string
	imds map[string]string // instance -> its metadata endpoint
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	// The SDK's default chain finds these; no file of the host is read.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDTEST")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	t.Setenv("AWS_CONFIG_FILE", "/nonexistent")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
	s := ec2fake.New("eu-west-1", []ec2fake.Instance{
		{ID: "i-0001", MAC: "02:00:00:00:00:01", ENI: "eni-0001", PrimaryIP: "10.0.1.10"},
		{ID: "i-0002", MAC: "02:00:00:00:00:02", ENI: "eni-0002", PrimaryIP: "10.0.1.11"},
	}, map[string]string{"eipalloc-0001": "203.0.113.7"}, []string{"rtb-0001"})
	api := httptest.NewServer(s)
	t.Cleanup(api.Close)
	p := &provider{ec2: s, api: api.URL, imds: map[string]string{}}
	for _, id := range []string{"i-0001", "i-0002"} {
		srv := httptest.NewServer(s.IMDS(id))
		t.Cleanup(srv.Close)
		p.imds[id] = srv.URL
	}
	return p
}

func (p *provider) mover(instance string, edit func(*config.AWSMover)) *Mover {
	c := config.AWSMover{Endpoint: p.api, IMDSEndpoint: p.imds[instance]}
	edit(&c)
	return Dial(c)
}

var vip = keeper.Move{Group: "VI_1", Addresses: []netip.Prefix{netip.MustParsePrefix("10.0.1.50/24")}}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func check(t *testing.T, m *Mover, want bool) {
	t.Helper()
	here, err := m.Check(ctx(t), vip)
	if err != nil || here != want {
		t.Fatalf("Check = %v, %v; want %v", here, err, want)
	}
}

// The secondary private IP follows Assert (reassignment moves it), the
// instance's region and interface come from its metadata service, and a
// node whose address was moved away sees it in Check.
func TestPrivateIPFollowsTheHolder(t *testing.T) {
	p := newProvider(t)
	m1 := p.mover("i-0001", func(c *config.AWSMover) { c.PrivateIP = true })
	m2 := p.mover("i-0002", func(c *config.AWSMover) { c.PrivateIP = true })
	check(t, m1, false)
	if err := m1.Assert(ctx(t), vip); err != nil {
		t.Fatal(err)
	}
	if o := p.ec2.OwnerOf("10.0.1.50"); o != "eni-0001" {
		t.Fatalf("10.0.1.50 on %q after node 1's assert, want eni-0001", o)
	}
	check(t, m1, true)
	if err := m2.Assert(ctx(t), vip); err != nil {
		t.Fatal(err)
	}
	if o := p.ec2.OwnerOf("10.0.1.50"); o != "eni-0002" {
		t.Fatalf("10.0.1.50 on %q after node 2's assert, want eni-0002 (reassigned)", o)
	}
	check(t, m1, false)
	check(t, m2, true)
	// Moved by hand in the console: a drift the holder sees.
	p.ec2.AssignByHand("eni-0001", "10.0.1.50")
	check(t, m2, false)
}

func TestElasticIPAndRoutesFollowTheHolder(t *testing.T) {
	p := newProvider(t)
	edit := func(c *config.AWSMover) {
		c.PrivateIP, c.ElasticIP, c.RouteTables, c.Region = true, "eipalloc-0001", []string{"rtb-0001"}, "eu-west-1"
	}
	m1, m2 := p.mover("i-0001", edit), p.mover("i-0002", edit)
	for i, m := range []*Mover{m1, m2, m1} {
		want := []string{"eni-0001", "eni-0002", "eni-0001"}[i]
		if err := m.Assert(ctx(t), vip); err != nil {
			t.Fatalf("assert %d: %v", i, err)
		}
		if o := p.ec2.EIPOwner("eipalloc-0001"); o != want {
			t.Errorf("assert %d: Elastic IP on %q, want %s", i, o, want)
		}
		if o := p.ec2.RouteTarget("rtb-0001", "10.0.1.50/32"); o != want {
			t.Errorf("assert %d: route to %q, want %s", i, o, want)
		}
	}
	check(t, m1, true)
	check(t, m2, false)
	var creates, replaces int
	for _, c := range p.ec2.Calls() {
		switch c.Action {
		case "CreateRoute":
			creates++
		case "ReplaceRoute":
			replaces++
		}
	}
	// The first assert finds no route (ReplaceRoute fails, CreateRoute
	// adds it); the others replace it.
	if creates != 1 || replaces != 3 {
		t.Errorf("%d CreateRoute, %d ReplaceRoute; want 1 and 3", creates, replaces)
	}
}

// EC2's errors reach the keeper as errors naming the code: throttling
// (the SDK does not retry: the keeper does, inside the fence), a missing
// permission, an unknown interface.
func TestErrorsAsEC2ReturnsThem(t *testing.T) {
	p := newProvider(t)
	m := p.mover("i-0001", func(c *config.AWSMover) { c.PrivateIP = true })
	p.ec2.Throttle(1)
	if err := m.Assert(ctx(t), vip); err == nil || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Fatalf("throttled assert: %v", err)
	}
	if err := m.Assert(ctx(t), vip); err != nil {
		t.Fatalf("assert after the throttling: %v", err)
	}
	p.ec2.Deny("AssignPrivateIpAddresses", true)
	if err := m.Assert(ctx(t), vip); err == nil || !strings.Contains(err.Error(), "UnauthorizedOperation") {
		t.Fatalf("assert without permission: %v", err)
	}
	bad := p.mover("i-0001", func(c *config.AWSMover) { c.PrivateIP, c.NetworkInterface = true, "eni-0404" })
	if _, err := bad.Check(ctx(t), vip); err == nil || !strings.Contains(err.Error(), "InvalidNetworkInterfaceID.NotFound") {
		t.Fatalf("check of an unknown interface: %v", err)
	}
	throttled := 0
	for _, c := range p.ec2.Calls() {
		if c.Result == "RequestLimitExceeded" {
			throttled++
		}
	}
	if throttled != 1 {
		t.Errorf("%d throttled calls, want 1 (no retry by the SDK)", throttled)
	}
}

// A call cut short (the fence) returns at once.
func TestAssertEndsWithItsContext(t *testing.T) {
	p := newProvider(t)
	m := p.mover("i-0001", func(c *config.AWSMover) { c.PrivateIP = true })
	c, cancel := context.WithCancel(context.Background())
	cancel()
	if err := m.Assert(c, vip); err == nil {
		t.Fatal("an assert on an ended context succeeded")
	}
	if len(p.ec2.Calls()) != 0 {
		t.Errorf("calls reached EC2 after the context ended: %+v", p.ec2.Calls())
	}
}

// The fence ending between two requests of one assert (a suspend, a
// stall: Live turns false) sends no more of them.
func TestNoRequestAfterTheFence(t *testing.T) {
	p := newProvider(t)
	m := p.mover("i-0001", func(c *config.AWSMover) { c.PrivateIP, c.RouteTables = true, []string{"rtb-0001"} })
	mv := vip
	checks := 0
	mv.Live = func() bool { checks++; return checks == 1 } // the first request goes; then the fence is over
	if err := m.Assert(ctx(t), mv); !errors.Is(err, ErrFenced) {
		t.Fatalf("assert across the fence: %v, want ErrFenced", err)
	}
	for _, c := range p.ec2.Calls() {
		if c.Action == "ReplaceRoute" || c.Action == "CreateRoute" {
			t.Fatalf("%s sent after the fence", c.Action)
		}
	}
	if o := p.ec2.OwnerOf("10.0.1.50"); o != "eni-0001" {
		t.Fatalf("the request before the fence did not land: 10.0.1.50 on %q", o)
	}
}

// An Elastic IP alone goes on the interface's primary address: the
// group's address is not necessarily on the interface.
func TestElasticIPAloneOnThePrimaryAddress(t *testing.T) {
	p := newProvider(t)
	m := p.mover("i-0001", func(c *config.AWSMover) { c.ElasticIP = "eipalloc-0001" })
	if err := m.Assert(ctx(t), vip); err != nil {
		t.Fatal(err)
	}
	if o := p.ec2.EIPOwner("eipalloc-0001"); o != "eni-0001" {
		t.Fatalf("Elastic IP on %q, want eni-0001", o)
	}
	check(t, m, true)
}
