// Package etcdclient owns building an etcd v3 client from vipd's
// configuration (endpoints, TLS, auth and the keepalive timing that lets a
// dead member be abandoned quickly); vipd and vipctl share it.
package etcdclient
