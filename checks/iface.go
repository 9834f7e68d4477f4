package checks

import (
	"context"
	"errors"
	"fmt"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// LinkDownError is the error of an interface check whose link is not up.
type LinkDownError struct {
	// Interface is the checked interface.
	Interface string
	// AdminUp is the IFF_UP flag (`ip link set X up`).
	AdminUp bool
	// OperState is the kernel's operstate, e.g. "down", "lowerlayerdown".
	OperState string
}

func (e *LinkDownError) Error() string {
	admin := "admin down"
	if e.AdminUp {
		admin = "admin up"
	}
	return fmt.Sprintf("checks: interface %s: link not up (%s, operstate %s)", e.Interface, admin, e.OperState)
}

// NewInterface returns a Probe for keepalived's track_interface: it passes
// iff the interface called name exists, is administratively up, and its
// operstate is up (or unknown, which drivers without carrier reporting
// say; the kernel's IFF_RUNNING is set for both, and keepalived's check is
// IFF_UP && IFF_RUNNING). It reads the link over netlink through h, or, if
// h is nil, in vipd's own network namespace.
//
// The Probe reads the state when run; for prompt reaction pair it with
// NewInterfaceTrigger, or have the daemon, which already follows link
// events for its VIP interfaces, call Runner.Kick on each one.
func NewInterface(name string, h *netlink.Handle) Probe {
	return func(ctx context.Context) error {
		var (
			l   netlink.Link
			err error
		)
		if h != nil {
			l, err = h.LinkByName(name)
		} else {
			l, err = netlink.LinkByName(name)
		}
		if err != nil {
			var nf netlink.LinkNotFoundError
			if errors.As(err, &nf) {
				return fmt.Errorf("checks: interface %s: no such interface", name)
			}
			return fmt.Errorf("checks: interface %s: %w", name, err)
		}
		return linkError(name, l.Attrs())
	}
}

// linkError is nil iff a is up by the rule of NewInterface.
func linkError(name string, a *netlink.LinkAttrs) error {
	adminUp := a.RawFlags&unix.IFF_UP != 0
	running := a.RawFlags&unix.IFF_RUNNING != 0
	oper := a.OperState == netlink.OperUp || a.OperState == netlink.OperUnknown
	if adminUp && running && oper {
		return nil
	}
	return &LinkDownError{Interface: name, AdminUp: adminUp, OperState: a.OperState.String()}
}

// NewInterfaceTrigger returns a Trigger that kicks on every netlink link
// event for the interface called name (including its creation and
// removal), in the namespace ns, or vipd's own if ns is nil.
func NewInterfaceTrigger(name string, ns *netns.NsHandle) Trigger {
	return func(ctx context.Context, kick func()) error {
		ch := make(chan netlink.LinkUpdate, 64)
		done := make(chan struct{})
		var subErr error
		errc := make(chan error, 1)
		opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
			select {
			case errc <- err:
			default:
			}
		}}
		if ns != nil {
			opts.Namespace = ns
		}
		if err := netlink.LinkSubscribeWithOptions(ch, done, opts); err != nil {
			return fmt.Errorf("checks: interface %s: netlink subscribe: %w", name, err)
		}
		defer func() {
			close(done)
			for range ch { // the subscription closes ch once it stopped
			}
		}()
		kick() // events before the subscription are not seen: look once more
		for {
			select {
			case <-ctx.Done():
				return nil
			case err := <-errc:
				// Kept for the message if the subscription ends (a
				// receive error closes ch); other errors are per message.
				subErr = err
			case u, ok := <-ch:
				if !ok {
					if ctx.Err() != nil {
						return nil
					}
					return fmt.Errorf("checks: interface %s: netlink subscription ended: %v", name, subErr)
				}
				if u.Attrs() != nil && u.Attrs().Name == name {
					kick()
				}
			}
		}
	}
}
