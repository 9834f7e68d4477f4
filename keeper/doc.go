// Package keeper owns the reconcile loop of each VIP group: it gathers
// health, candidacy, leadership and lease state, asks the pure Decide
// function what to do, and applies the answer to etcd and the interface in
// the order the safety argument requires (acquire: key, then address, then
// announcement; release: address, then key).
package keeper
