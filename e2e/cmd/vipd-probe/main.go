// Command vipd-probe is the e2e client probe. It runs inside the testbed's
// client network namespace (never in the host namespace: it refuses) and
// measures what a new client of the VIP sees.
//
// Every --interval (default 10 ms) it starts one HTTP GET of --url with a
// --timeout (default 100 ms) deadline for the whole exchange. Probes start on
// the ticker independently of each other (up to --max-inflight at once), so
// a hung request never delays the next probe and the timeline keeps its 10 ms
// resolution during an outage.
//
// Keep-alive is off on purpose: every probe opens a new TCP connection, so it
// goes through the client's routing and neighbour (ARP) state as a fresh
// client would, and a connection pinned to the old holder cannot hide or fake
// a failover.
//
// Output: one line per probe on stdout, in completion order:
//
//	<start unix nanos> <node|-> <latency µs>
//
// node is the trimmed response body (HAProxy answers with its node name) of a
// 200 response; "-" means error, timeout or non-200. Consumers should sort by
// the first field. The probe stops after --duration or on SIGTERM/SIGINT.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/nscheck"
)

func main() {
	url := flag.String("url", "http://192.168.20.15/", "URL to probe (the VIP)")
	interval := flag.Duration("interval", 10*time.Millisecond, "time between probe starts")
	timeout := flag.Duration("timeout", 100*time.Millisecond, "deadline of one probe (connect + request + response)")
	duration := flag.Duration("duration", 10*time.Minute, "stop after this long (bounded by design)")
	maxInflight := flag.Int("max-inflight", 32, "maximum concurrent probes; ticks beyond it are recorded as failures")
	flag.Parse()

	nscheck.MustNotBeHost("vipd-probe")
	if *interval <= 0 || *timeout <= 0 || *duration <= 0 || *maxInflight <= 0 {
		fmt.Fprintln(os.Stderr, "vipd-probe: --interval, --timeout, --duration and --max-inflight must be > 0")
		os.Exit(2)
	}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer cancel()
	ctx, cancelT := context.WithTimeout(ctx, *duration)
	defer cancelT()

	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{
			Proxy:              nil, // never follow *_PROXY from the environment
			DisableKeepAlives:  true,
			DisableCompression: true,
			DialContext:        (&net.Dialer{Timeout: *timeout}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	lines := make(chan string, 1024)
	var wg sync.WaitGroup
	sem := make(chan struct{}, *maxInflight)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		w := bufio.NewWriter(os.Stdout)
		for l := range lines {
			w.WriteString(l)
			if len(lines) == 0 {
				w.Flush() // keep the consumer live
			}
		}
		w.Flush()
	}()

	tick := time.NewTicker(*interval)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
		}
		start := time.Now()
		select {
		case sem <- struct{}{}:
		default:
			lines <- fmt.Sprintf("%d - 0\n", start.UnixNano())
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			node := probe(client, *url)
			lines <- fmt.Sprintf("%d %s %d\n", start.UnixNano(), node, time.Since(start).Microseconds())
		}()
	}
	wg.Wait()
	close(lines)
	<-writerDone
}

func probe(c *http.Client, url string) string {
	resp, err := c.Get(url)
	if err != nil {
		return "-"
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256))
	if err != nil || resp.StatusCode != http.StatusOK {
		return "-"
	}
	node := strings.TrimSpace(string(body))
	if node == "" || strings.ContainsAny(node, " \t\n") {
		return "-"
	}
	return node
}
