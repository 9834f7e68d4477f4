package testbed

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// KeepAlive holds long-lived HTTP/1.1 connections to the VIP from the
// client namespace, as browsers and API clients keep them: each sends a
// request every period on its own connection and reads the answer. A
// connection that fails (reset, closed by the server, or no answer within
// a second: hung) is counted and dialled again. Every VIP move breaks the
// connections to the old holder (the new one has no state for them); a
// move that does not happen breaks none.
type KeepAlive struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	conns    int
	mu       sync.Mutex
	requests int
	failures []string
	broken   map[int]bool
}

// KeepAliveResult is what the connections saw.
type KeepAliveResult struct {
	Conns, Requests int
	// Broken is how many connections failed at least once; Failures says
	// how, in order ("conn 3 at 15:04:05.000: read: connection reset").
	Broken   int
	Failures []string
}

// StartKeepAlive opens n connections through the VIP, a request on each
// every period, until Stop.
func (tb *Testbed) StartKeepAlive(n int, period time.Duration) *KeepAlive {
	ctx, cancel := context.WithCancel(context.Background())
	k := &KeepAlive{cancel: cancel, conns: n, broken: map[int]bool{}}
	addr := net.JoinHostPort(VIP.Addr().String(), "80")
	for i := range n {
		k.wg.Go(func() { k.conn(ctx, tb.Client.NS, addr, i, period) })
	}
	return k
}

func (k *KeepAlive) conn(ctx context.Context, ns *Netns, addr string, i int, period time.Duration) {
	var c net.Conn
	var r *bufio.Reader
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	for ctx.Err() == nil {
		if c == nil {
			dctx, cancel := context.WithTimeout(ctx, time.Second)
			var err error
			c, err = ns.DialContext(dctx, "tcp", addr)
			cancel()
			if err != nil {
				c = nil
				k.sleep(ctx, period)
				continue
			}
			r = bufio.NewReader(c)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		_, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: vip\r\n\r\n")
		if err == nil {
			var resp *http.Response
			if resp, err = http.ReadResponse(r, nil); err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
		k.mu.Lock()
		k.requests++
		if err != nil && ctx.Err() == nil {
			k.failures = append(k.failures, fmt.Sprintf("conn %d at %s: %v", i, time.Now().Format("15:04:05.000"), err))
			k.broken[i] = true
		}
		k.mu.Unlock()
		if err != nil {
			c.Close()
			c = nil
		}
		k.sleep(ctx, period)
	}
}

func (k *KeepAlive) sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// Stop closes the connections and returns what they saw.
func (k *KeepAlive) Stop() KeepAliveResult {
	k.cancel()
	k.wg.Wait()
	k.mu.Lock()
	defer k.mu.Unlock()
	return KeepAliveResult{Conns: k.conns, Requests: k.requests, Broken: len(k.broken), Failures: append([]string(nil), k.failures...)}
}
