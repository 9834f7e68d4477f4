package etcdclient

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
)

// New returns a client for c. It does not wait for a connection.
func New(c config.Etcd, log *zap.Logger) (*clientv3.Client, error) {
	cc := clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.DialTimeout,
		// gRPC raises the ping interval to its minimum of 10 s; what
		// matters is the timeout, which gRPC also sets as the socket's
		// TCP user timeout: data unacknowledged for a second aborts the
		// connection (the view's progress requests and the renewals keep
		// data flowing), so a cut-off member is abandoned quickly.
		DialKeepAliveTime:    time.Second,
		DialKeepAliveTimeout: time.Second,
		PermitWithoutStream:  true,
		Logger:               log,
	}
	if c.Username != "" {
		pw, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("etcd.password_file: %w", err)
		}
		cc.Username, cc.Password = c.Username, strings.TrimRight(string(pw), "\r\n")
	}
	if c.TLS.CAFile != "" || c.TLS.CertFile != "" {
		tc := &tls.Config{MinVersion: tls.VersionTLS12}
		if c.TLS.CAFile != "" {
			pem, err := os.ReadFile(c.TLS.CAFile)
			if err != nil {
				return nil, fmt.Errorf("etcd.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("etcd.tls.ca_file %q: no PEM certificates", c.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if c.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
			if err != nil {
				return nil, fmt.Errorf("etcd.tls.cert_file/key_file: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		cc.TLS = tc
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		return nil, fmt.Errorf("etcd client: %w", err)
	}
	return cli, nil
}
