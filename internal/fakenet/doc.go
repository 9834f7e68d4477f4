// Package fakenet owns in-memory stand-ins for a host's interface table,
// for the no-root test tier: Host implements the keeper's Interfaces
// seam, and Recorder watches every Host to measure time with two holders.
// The namespace tier runs the real netlink code.
package fakenet
