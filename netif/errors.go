package netif

import "errors"

var (
	// ErrLifetimeTooShort is returned by Replace for a lifetime under one
	// second: the kernel counts lifetimes in whole seconds, and 0 would mean
	// "already expired".
	ErrLifetimeTooShort = errors.New("netif: lifetime shorter than 1s")

	// ErrNoInterface is returned when the named interface does not exist in
	// the handle's network namespace.
	ErrNoInterface = errors.New("netif: no such interface")

	// ErrGateClosed is returned by Announce when its gate closed before a
	// frame: the holder lost its fence or its VIP. Not a failure to log.
	ErrGateClosed = errors.New("netif: announcement gate closed")

	// ErrClosed is returned by a Handle's methods after Close.
	ErrClosed = errors.New("netif: handle closed")

	// errNoHardwareAddr: announcing needs an Ethernet MAC.
	errNoHardwareAddr = errors.New("netif: interface has no 6-byte Ethernet address")
)
