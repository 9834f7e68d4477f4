package checks

import (
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestLinkError(t *testing.T) {
	tests := []struct {
		name  string
		flags uint32
		oper  netlink.LinkOperState
		up    bool
		want  string
	}{
		{"up and running", unix.IFF_UP | unix.IFF_RUNNING, netlink.OperUp, true, ""},
		{"unknown operstate but running (lo, tun)", unix.IFF_UP | unix.IFF_RUNNING, netlink.OperUnknown, true, ""},
		{"admin down", 0, netlink.OperDown, false, "admin down, operstate down"},
		{"no carrier", unix.IFF_UP, netlink.OperDown, false, "admin up, operstate down"},
		{"veth peer down", unix.IFF_UP, netlink.OperLowerLayerDown, false, "lower-layer-down"},
		{"dormant", unix.IFF_UP, netlink.OperDormant, false, "dormant"},
		{"running flag but operstate down", unix.IFF_UP | unix.IFF_RUNNING, netlink.OperDown, false, "operstate down"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := linkError("eth1", &netlink.LinkAttrs{Name: "eth1", RawFlags: tt.flags, OperState: tt.oper})
			if tt.up {
				if err != nil {
					t.Fatalf("err = %v, want up", err)
				}
				return
			}
			var le *LinkDownError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "checks: interface eth1: ") {
				t.Fatalf("err = %v, want a *LinkDownError naming eth1 and %q", err, tt.want)
			}
		})
	}
}
