package awsmover

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/smithy-go"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/keeper"
)

// API is the part of the EC2 API the mover uses (*ec2.Client).
type API interface {
	AssignPrivateIpAddresses(context.Context, *ec2.AssignPrivateIpAddressesInput, ...func(*ec2.Options)) (*ec2.AssignPrivateIpAddressesOutput, error)
	DescribeNetworkInterfaces(context.Context, *ec2.DescribeNetworkInterfacesInput, ...func(*ec2.Options)) (*ec2.DescribeNetworkInterfacesOutput, error)
	AssociateAddress(context.Context, *ec2.AssociateAddressInput, ...func(*ec2.Options)) (*ec2.AssociateAddressOutput, error)
	DescribeAddresses(context.Context, *ec2.DescribeAddressesInput, ...func(*ec2.Options)) (*ec2.DescribeAddressesOutput, error)
	ReplaceRoute(context.Context, *ec2.ReplaceRouteInput, ...func(*ec2.Options)) (*ec2.ReplaceRouteOutput, error)
	CreateRoute(context.Context, *ec2.CreateRouteInput, ...func(*ec2.Options)) (*ec2.CreateRouteOutput, error)
	DescribeRouteTables(context.Context, *ec2.DescribeRouteTablesInput, ...func(*ec2.Options)) (*ec2.DescribeRouteTablesOutput, error)
}

// Metadata is the part of the instance metadata service the mover uses
// (*imds.Client).
type Metadata interface {
	GetMetadata(context.Context, *imds.GetMetadataInput, ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
	GetRegion(context.Context, *imds.GetRegionInput, ...func(*imds.Options)) (*imds.GetRegionOutput, error)
}

// Mover moves a group's addresses to this instance's interface.
type Mover struct {
	cfg config.AWSMover

	mu  sync.Mutex
	api API    // set on first use (Dial) or by New
	eni string // the interface, configured or looked up once
	// dial makes the API client on first use.
	dial func(ctx context.Context) (API, Metadata, error)
	md   Metadata
}

// New returns a mover that calls api, with md for what cfg leaves out.
func New(cfg config.AWSMover, api API, md Metadata) *Mover {
	return &Mover{cfg: cfg, api: api, md: md, eni: cfg.NetworkInterface}
}

// Dial returns a mover whose EC2 and metadata clients are made on first
// use, from the SDK's default configuration (environment, shared files,
// the instance role) and cfg.
func Dial(cfg config.AWSMover) *Mover {
	m := &Mover{cfg: cfg, eni: cfg.NetworkInterface}
	m.dial = func(ctx context.Context) (API, Metadata, error) {
		opts := []func(*awsconfig.LoadOptions) error{awsconfig.WithRetryMaxAttempts(1)}
		if cfg.IMDSEndpoint != "" {
			opts = append(opts, awsconfig.WithEC2IMDSEndpoint(cfg.IMDSEndpoint))
		}
		ac, err := awsconfig.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return nil, nil, fmt.Errorf("awsmover: SDK config: %w", err)
		}
		md := imds.NewFromConfig(ac, func(o *imds.Options) {
			if cfg.IMDSEndpoint != "" {
				o.Endpoint = cfg.IMDSEndpoint
			}
			o.Retryer = retry.AddWithMaxAttempts(retry.NewStandard(), 1) // the keeper retries
		})
		region := cfg.Region
		if region == "" {
			r, err := md.GetRegion(ctx, &imds.GetRegionInput{})
			if err != nil {
				return nil, nil, fmt.Errorf("awsmover: region from the instance metadata: %w", err)
			}
			region = r.Region
		}
		api := ec2.NewFromConfig(ac, func(o *ec2.Options) {
			o.Region = region
			if cfg.Endpoint != "" {
				o.BaseEndpoint = aws.String(cfg.Endpoint)
			}
		})
		return api, md, nil
	}
	return m
}

// clients returns the EC2 client and this instance's interface, looking
// them up on first use.
func (m *Mover) clients(ctx context.Context) (API, string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.api == nil {
		api, md, err := m.dial(ctx)
		if err != nil {
			return nil, "", err
		}
		m.api, m.md = api, md
	}
	if m.eni == "" {
		eni, err := m.primaryInterface(ctx)
		if err != nil {
			return nil, "", err
		}
		m.eni = eni
	}
	return m.api, m.eni, nil
}

func (m *Mover) primaryInterface(ctx context.Context) (string, error) {
	get := func(path string) (string, error) {
		out, err := m.md.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
		if err != nil {
			return "", fmt.Errorf("awsmover: instance metadata %s: %w", path, err)
		}
		defer out.Content.Close()
		b, err := io.ReadAll(out.Content)
		return strings.TrimSpace(string(b)), err
	}
	mac, err := get("mac")
	if err != nil {
		return "", err
	}
	return get("network/interfaces/macs/" + mac + "/interface-id")
}

// ErrFenced is returned for a request not sent because the fence passed.
var ErrFenced = errors.New("awsmover: the fence has passed; request not sent")

// live reports whether a request may still be sent: the call's context
// has not ended and the fence holds (checked before each request, so a
// suspend or a stall between two requests of one call sends no more).
func live(ctx context.Context, mv keeper.Move) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if mv.Live != nil && !mv.Live() {
		return ErrFenced
	}
	return nil
}

// Assert moves every configured item to this instance's interface.
func (m *Mover) Assert(ctx context.Context, mv keeper.Move) error {
	api, eni, err := m.clients(ctx)
	if err != nil {
		return err
	}
	addrs := ips(mv.Addresses)
	if m.cfg.PrivateIP {
		if err := live(ctx, mv); err != nil {
			return err
		}
		if _, err := api.AssignPrivateIpAddresses(ctx, &ec2.AssignPrivateIpAddressesInput{
			NetworkInterfaceId: aws.String(eni), PrivateIpAddresses: addrs, AllowReassignment: aws.Bool(true),
		}); err != nil {
			return fmt.Errorf("awsmover: assign %v to %s: %w", addrs, eni, err)
		}
	}
	if m.cfg.ElasticIP != "" {
		in := &ec2.AssociateAddressInput{AllocationId: aws.String(m.cfg.ElasticIP), NetworkInterfaceId: aws.String(eni), AllowReassociation: aws.Bool(true)}
		if m.cfg.PrivateIP && len(addrs) > 0 {
			// On the address just moved here; else the interface's
			// primary one (the group's may not be on it).
			in.PrivateIpAddress = aws.String(addrs[0])
		}
		if err := live(ctx, mv); err != nil {
			return err
		}
		if _, err := api.AssociateAddress(ctx, in); err != nil {
			return fmt.Errorf("awsmover: associate %s with %s: %w", m.cfg.ElasticIP, eni, err)
		}
	}
	for _, rtb := range m.cfg.RouteTables {
		for _, p := range mv.Addresses {
			if err := live(ctx, mv); err != nil {
				return err
			}
			if err := replaceRoute(ctx, api, rtb, hostRoute(p), eni); err != nil {
				return err
			}
		}
	}
	return nil
}

func replaceRoute(ctx context.Context, api API, rtb string, dst netip.Prefix, eni string) error {
	rin := &ec2.ReplaceRouteInput{RouteTableId: aws.String(rtb), NetworkInterfaceId: aws.String(eni)}
	cin := &ec2.CreateRouteInput{RouteTableId: aws.String(rtb), NetworkInterfaceId: aws.String(eni)}
	if dst.Addr().Is4() {
		rin.DestinationCidrBlock, cin.DestinationCidrBlock = aws.String(dst.String()), aws.String(dst.String())
	} else {
		rin.DestinationIpv6CidrBlock, cin.DestinationIpv6CidrBlock = aws.String(dst.String()), aws.String(dst.String())
	}
	_, err := api.ReplaceRoute(ctx, rin)
	if code(err) == "InvalidRoute.NotFound" && ctx.Err() == nil {
		_, err = api.CreateRoute(ctx, cin)
	}
	if err != nil {
		return fmt.Errorf("awsmover: route %s in %s to %s: %w", dst, rtb, eni, err)
	}
	return nil
}

// Check reports whether every configured item points at this instance's
// interface.
func (m *Mover) Check(ctx context.Context, mv keeper.Move) (bool, error) {
	api, eni, err := m.clients(ctx)
	if err != nil {
		return false, err
	}
	addrs := ips(mv.Addresses)
	if m.cfg.PrivateIP {
		out, err := api.DescribeNetworkInterfaces(ctx, &ec2.DescribeNetworkInterfacesInput{NetworkInterfaceIds: []string{eni}})
		if err != nil {
			return false, fmt.Errorf("awsmover: describe %s: %w", eni, err)
		}
		var have []string
		for _, ni := range out.NetworkInterfaces {
			for _, p := range ni.PrivateIpAddresses {
				have = append(have, aws.ToString(p.PrivateIpAddress))
			}
		}
		for _, a := range addrs {
			if !slices.Contains(have, a) {
				return false, nil
			}
		}
	}
	if m.cfg.ElasticIP != "" {
		out, err := api.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{AllocationIds: []string{m.cfg.ElasticIP}})
		if err != nil {
			return false, fmt.Errorf("awsmover: describe %s: %w", m.cfg.ElasticIP, err)
		}
		if len(out.Addresses) != 1 || aws.ToString(out.Addresses[0].NetworkInterfaceId) != eni ||
			(m.cfg.PrivateIP && len(addrs) > 0 && aws.ToString(out.Addresses[0].PrivateIpAddress) != addrs[0]) {
			return false, nil
		}
	}
	if len(m.cfg.RouteTables) > 0 {
		out, err := api.DescribeRouteTables(ctx, &ec2.DescribeRouteTablesInput{RouteTableIds: m.cfg.RouteTables})
		if err != nil {
			return false, fmt.Errorf("awsmover: describe %v: %w", m.cfg.RouteTables, err)
		}
		for _, rtb := range m.cfg.RouteTables {
			for _, p := range mv.Addresses {
				if !routedTo(out, rtb, hostRoute(p).String(), eni) {
					return false, nil
				}
			}
		}
	}
	return true, nil
}

func routedTo(out *ec2.DescribeRouteTablesOutput, rtb, dst, eni string) bool {
	for _, t := range out.RouteTables {
		if aws.ToString(t.RouteTableId) != rtb {
			continue
		}
		for _, r := range t.Routes {
			if (aws.ToString(r.DestinationCidrBlock) == dst || aws.ToString(r.DestinationIpv6CidrBlock) == dst) && aws.ToString(r.NetworkInterfaceId) == eni {
				return true
			}
		}
	}
	return false
}

func ips(ps []netip.Prefix) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Addr().String()
	}
	return out
}

func hostRoute(p netip.Prefix) netip.Prefix { return netip.PrefixFrom(p.Addr(), p.Addr().BitLen()) }

// code is the EC2 error code of err ("" if none).
func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}
