package checks

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	"github.com/vipd/vipd/config"
)

// NewProbe builds the Probe for one configured check (see config.Check for
// the keys of each type). Errors name the type and the bad value; the
// config validator rejects most of them first, but a probe may also fail
// here on the host (an exec check's user that does not exist, an
// unreadable ca_file).
func NewProbe(c config.Check) (Probe, error) {
	switch c.Type {
	case "http":
		if c.URL == "" {
			return nil, errors.New("checks: http check needs a url")
		}
		u, err := url.Parse(c.URL)
		if err != nil {
			return nil, fmt.Errorf("checks: http check url: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("checks: http check url %q: want http://host[:port]/path or https://...", u.Redacted())
		}
		client, err := httpClientFor(c)
		if err != nil {
			return nil, err
		}
		return NewHTTPWith(c.URL, HTTPOptions{ExpectStatus: c.ExpectStatus, BodyContains: c.BodyContains, Client: client}), nil
	case "tcp":
		if _, _, err := net.SplitHostPort(c.Address); err != nil || c.Address == "" {
			return nil, fmt.Errorf("checks: tcp check address %q: want host:port", c.Address)
		}
		return NewTCP(c.Address), nil
	case "process":
		switch {
		case (c.Pidfile == "") == (c.Name == ""):
			return nil, fmt.Errorf("checks: process check needs exactly one of pidfile and name (pidfile %q, name %q)", c.Pidfile, c.Name)
		case c.Pidfile != "":
			return NewPidfile(c.Pidfile), nil
		default:
			return NewProcessName(c.Name), nil
		}
	case "exec":
		return NewExec(c.Command, c.User)
	case "file":
		if c.Path == "" {
			return nil, errors.New("checks: file check needs a path")
		}
		switch c.Missing {
		case "", "down":
			return NewFile(c.Path, false), nil
		case "zero":
			return NewFile(c.Path, true), nil
		default:
			return nil, fmt.Errorf("checks: file check missing %q: want down or zero", c.Missing)
		}
	case "interface":
		if c.Name == "" {
			return nil, errors.New("checks: interface check needs a name")
		}
		return NewInterface(c.Name, nil), nil
	default:
		return nil, fmt.Errorf("checks: type %q not supported", c.Type)
	}
}

// NewTrigger returns the event source of a configured check and its name,
// for WithTrigger: a pidfd watch of the process (and inotify on its
// pidfile) for a process check, an inotify watch for a file check, a
// netlink link subscription (in vipd's network namespace) for an
// interface check, and nil for the polled types.
func NewTrigger(c config.Check) (Trigger, string) {
	switch c.Type {
	case "process":
		switch {
		case c.Pidfile != "":
			return NewPidfileTrigger(c.Pidfile), SourcePidfd
		case c.Name != "":
			return NewProcessNameTrigger(c.Name), SourcePidfd
		}
		return nil, SourceInterval
	case "file":
		return NewFileTrigger(c.Path), SourceInotify
	case "interface":
		return NewInterfaceTrigger(c.Name, nil), SourceNetlink
	default:
		return nil, SourceInterval
	}
}

// NewTCP returns a Probe that passes iff a TCP connection to address
// (host:port) is established within the run's timeout. The connection is
// closed at once; nothing is sent.
func NewTCP(address string) Probe {
	return func(ctx context.Context) error {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", address)
		if err != nil {
			var oe *net.OpError
			if errors.As(err, &oe) && oe.Err != nil {
				err = oe.Err
			}
			if ctx.Err() != nil && !errors.Is(err, ctx.Err()) {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return fmt.Errorf("checks: tcp connect %s: %w", address, err)
		}
		_ = conn.Close()
		return nil
	}
}
