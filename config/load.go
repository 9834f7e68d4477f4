package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"go.yaml.in/yaml/v3"
)

// Defaults, exported so docs and tests refer to one place.
const (
	DefaultPrefix         = "/vipd"
	DefaultLeaseTTL       = 3 * time.Second
	DefaultDialTimeout    = 2 * time.Second
	DefaultRequestTimeout = 500 * time.Millisecond
	DefaultMetricsListen  = "127.0.0.1:9842"
	DefaultCheckInterval  = time.Second
	DefaultPriority       = 100
	DefaultBackoffStep    = 100 * time.Millisecond
	DefaultMoverInterval  = 10 * time.Second
	DefaultMoverTimeout   = 5 * time.Second
	DefaultGARPCount      = 5
	DefaultGARPInterval   = time.Second
	DefaultNotifyTimeout  = 30 * time.Second
)

// Check defaults that depend on the check type.
const (
	// DefaultExecUser runs exec checks unprivileged when vipd runs as root
	// and `user:` is empty; root must be asked for by name. (An unprivileged
	// vipd runs them as itself.)
	DefaultExecUser = "nobody"
	// DefaultFileMissing is what an absent file check's file means.
	DefaultFileMissing = "down"
)

// Default returns a configuration with every default set and no groups.
func Default() Config {
	return Config{
		Etcd: Etcd{
			Prefix:         DefaultPrefix,
			LeaseTTL:       DefaultLeaseTTL,
			DialTimeout:    DefaultDialTimeout,
			RequestTimeout: DefaultRequestTimeout,
		},
		Metrics: Metrics{Listen: DefaultMetricsListen},
	}
}

// defaultGroup is the starting point every decoded group is merged onto, so
// that an absent `preempt` means true (keepalived's default) while an
// explicit `preempt: false` is kept.
func defaultGroup() Group {
	return Group{Priority: DefaultPriority, Preempt: true}
}

// UnmarshalYAML decodes a group on top of its defaults.
func (g *Group) UnmarshalYAML(unmarshal func(any) error) error {
	type plain Group // no methods: avoids recursion
	p := plain(defaultGroup())
	if err := unmarshal(&p); err != nil {
		return err
	}
	*g = Group(p)
	return nil
}

// ErrInvalid wraps every validation failure, so callers can tell a bad file
// from an unreadable one.
var ErrInvalid = errors.New("config: invalid")

// Load reads, decodes, defaults and validates the file at path.
func Load(path string) (Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	return Parse(f)
}

// Parse decodes, defaults and validates a configuration.
func Parse(r io.Reader) (Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return Config{}, fmt.Errorf("config: read: %w", err)
	}
	// Unknown keys first, all of them, each with its full path and the
	// key meant: the decoder's own message names a Go type, not a key.
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if errs := unknownKeys(&doc); len(errs) > 0 {
		return Config{}, fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	c := Default()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return Config{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := c.applyDefaults(); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// applyDefaults replaces zero values with defaults.
func (c *Config) applyDefaults() error {
	if c.Node == "" {
		h, err := os.Hostname()
		if err != nil {
			return fmt.Errorf("config: node is empty and the hostname is unknown: %w", err)
		}
		c.Node = h
	}
	d := Default()
	if c.Etcd.Prefix == "" {
		c.Etcd.Prefix = d.Etcd.Prefix
	}
	if c.Etcd.LeaseTTL == 0 {
		c.Etcd.LeaseTTL = d.Etcd.LeaseTTL
	}
	if c.Etcd.DialTimeout == 0 {
		c.Etcd.DialTimeout = d.Etcd.DialTimeout
	}
	if c.Etcd.RequestTimeout == 0 {
		c.Etcd.RequestTimeout = d.Etcd.RequestTimeout
	}
	for name, ch := range c.Checks {
		if ch.Interval == 0 {
			ch.Interval = DefaultCheckInterval
		}
		if ch.Timeout == 0 {
			ch.Timeout = ch.Interval
		}
		if ch.FastInterval == 0 {
			ch.FastInterval = ch.Interval
		}
		if ch.Rise == 0 {
			ch.Rise = 1
		}
		if ch.Fall == 0 {
			ch.Fall = 1
		}
		if ch.Type == "file" && ch.Missing == "" {
			ch.Missing = DefaultFileMissing
		}
		c.Checks[name] = ch
	}
	for i := range c.Groups {
		g := &c.Groups[i]
		if g.BackoffStep == 0 {
			g.BackoffStep = DefaultBackoffStep
		}
		if g.GARP.Count == 0 {
			g.GARP.Count = DefaultGARPCount
		}
		if g.GARP.Interval == 0 {
			g.GARP.Interval = DefaultGARPInterval
		}
		if g.GARP.ProbeWait == 0 {
			g.GARP.ProbeWait = DefaultProbeWait
		}
		if g.Scope == "" {
			g.Scope = "global"
		}
		if g.Mover.Type != "" {
			if g.Mover.Interval == 0 {
				g.Mover.Interval = DefaultMoverInterval
			}
			if g.Mover.Timeout == 0 {
				g.Mover.Timeout = min(DefaultMoverTimeout, g.Mover.Interval)
				if g.Mover.Type == "exec" && c.Etcd.LeaseTTL > time.Second {
					// Killed at the fence it starts with: less than a TTL.
					g.Mover.Timeout = min(g.Mover.Timeout, c.Etcd.LeaseTTL-time.Second)
				}
			}
		}
		if g.Notify.Timeout == 0 {
			g.Notify.Timeout = DefaultNotifyTimeout
		}
	}
	return nil
}
