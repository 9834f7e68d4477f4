// Command vipd keeps a floating IP on exactly one healthy node of a group,
// with an etcd cluster as the arbiter. See README.md.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
	"github.com/prometheus/client_golang/prometheus"

	"go.uber.org/zap"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
	"github.com/vipd/vipd/internal/etcdclient"
	"github.com/vipd/vipd/internal/runlock"
	"github.com/vipd/vipd/keeper"
	"github.com/vipd/vipd/metrics"
	"github.com/vipd/vipd/mover"
	"github.com/vipd/vipd/netif"
	"github.com/vipd/vipd/peer"
)

// version is set by the linker (make build).
var version = "dev"

const usage = `usage: vipd <command> [flags]

commands:
  run      --config FILE   run the daemon
  check    --config FILE   validate a config file; touches nothing
  cleanup  --config FILE   remove every configured VIP from this host
  version                  print the version
  import-keepalived FILE   convert a keepalived.conf to vipd YAML (stdout); reports every line that is
                           not carried as written (stderr); exit 3 names what cannot be carried

run and cleanup refuse while another vipd holds <runtime dir>/vipd.lock;
the runtime dir is --runtime-dir, else $RUNTIME_DIRECTORY (set by systemd),
else /run/vipd.
`

func main() {
	os.Exit(realMain(os.Args[1:], os.Stdout, os.Stderr))
}

func realMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	cmd, rest := args[0], args[1:]
	fs := flag.NewFlagSet("vipd "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "/etc/vipd/vipd.yaml", "config file")
	logFormat := fs.String("log-format", "text", "log format: text or json")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	handoffKeys := fs.Bool("handoff", false, "check: also print, as one JSON line, the settings a re-execution in place compares (the running vipd asks the new binary)")
	runtimeDir := fs.String("runtime-dir", "", "directory of the one-vipd-per-host lock (default $RUNTIME_DIRECTORY, else "+runlock.DefaultDir+")")
	switch cmd {
	case "version", "--version", "-v":
		fmt.Fprintln(stdout, "vipd", version)
		if slices.Contains(rest, "--features") {
			// What a running vipd asks of a binary it would re-execute.
			fmt.Fprintln(stdout, "features:", featureReexec)
		}
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stdout, usage)
		return 0
	case "import-keepalived":
		return importKeepalived(rest, stdout, stderr)
	case "run", "check", "cleanup":
	default:
		fmt.Fprintf(stderr, "vipd: unknown command %q\n%s", cmd, usage)
		return 2
	}
	if err := fs.Parse(rest); err != nil {
		return 2
	}
	log, err := newLogger(stderr, *logFormat, *logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %v\n", err)
		return 2
	}
	var handoff *keeper.Handoff
	var lk *runlock.Lock
	if cmd == "run" {
		// A re-execution in place (reexec.go) hands over the lock and
		// the node's lease and claims.
		lk, handoff = inherited(log, runlock.Dir(*runtimeDir, os.Getenv("RUNTIME_DIRECTORY")))
	}
	if cmd != "check" && lk == nil {
		// Before anything else: a second vipd must touch nothing, and
		// cleanup would strip a running vipd's VIPs. The lock is held
		// until realMain returns (run) or only for the cleanup itself.
		if lk, err = lockHost(*runtimeDir, stderr); err != nil {
			return 1
		}
	}
	if lk != nil {
		defer lk.Close()
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		fmt.Fprintf(stderr, "vipd: %s: %v\n", *cfgPath, err)
		return 1
	}
	for _, w := range cfg.Warnings() {
		log.Warn("config", "warning", w)
	}

	switch cmd {
	case "check":
		if cfg.Peer.Listen != "" {
			if _, err := peer.LoadKey(cfg.Peer.KeyFile); err != nil {
				fmt.Fprintf(stderr, "vipd: %s: peer.key_file: %v\n", *cfgPath, err)
				return 1
			}
		}
		fmt.Fprintf(stdout, "%s: ok (%d groups, %d checks, node %s)\n", *cfgPath, len(cfg.Groups), len(cfg.Checks), cfg.Node)
		if *handoffKeys {
			b, _ := json.Marshal(handoffKeysOf(cfg))
			fmt.Fprintf(stdout, "handoff: %s\n", b)
		}
		if cfg.Peer.Listen == "" {
			fmt.Fprintln(stdout, "peer channel: off. A holder cut from etcd drops its VIPs at its fence, even when its peers"+
				" reach etcd; set peer.listen and peer.key_file on every node to have them renew its lease (docs/design.md §2.8).")
		} else {
			fmt.Fprintf(stdout, "peer channel: on, serving %s, advertised to peers as %s; failsafe %s\n", cfg.Peer.Listen, cfg.Peer.Endpoint(),
				map[bool]string{true: "on", false: "off (a holder drops its VIPs when nobody can reach etcd; peer.failsafe: true keeps them while every member promises)"}[cfg.Peer.Failsafe])
		}
		for _, g := range cfg.Groups {
			if d := moverSummary(g.Mover); d != "" {
				fmt.Fprintf(stdout, "group %s: %s\n", g.Name, d)
			}
		}
		return 0
	case "cleanup":
		return cleanup(cfg, log, stdout)
	}
	runDir := runlock.Dir(*runtimeDir, os.Getenv("RUNTIME_DIRECTORY"))
	// A stop asked for while this image hands over must not be lost: the
	// handler stays for the whole process (run's own goes with run).
	var stopAsked atomic.Bool
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for range term {
			stopAsked.Store(true)
		}
	}()
	stopAtOnce := false
	for {
		req, err := run(*cfgPath, cfg, runDir, log, handoff, &stopAsked, stopAtOnce)
		if err != nil {
			log.Error("vipd failed", "err", err)
			return 1
		}
		if req == nil {
			return 0
		}
		if stopAsked.Load() {
			// Stopped while handing over: take the VIPs back, then stop
			// as always (a graceful handover to a peer).
			log.Info("stop asked for during the re-execution; stopping instead")
			stopAtOnce, handoff = true, &req.handoff
			continue
		}
		err = execSelf(req, lk, runDir)
		// Still here: this image adopts what it handed over, with the
		// configuration the new binary accepted (or the running one).
		log.Error("re-execution failed; this vipd takes its VIPs back and goes on", "err", err)
		if c, err := config.Load(*cfgPath); err == nil {
			cfg = c
		}
		handoff = &req.handoff
	}
}

// lockHost takes the one-vipd-per-host lock in the runtime directory. On
// failure it has written the reason to stderr as one line.
func lockHost(flagDir string, stderr io.Writer) (*runlock.Lock, error) {
	lk, err := runlock.Acquire(runlock.Dir(flagDir, os.Getenv("RUNTIME_DIRECTORY")))
	var held *runlock.HeldError
	switch {
	case err == nil:
		return lk, nil
	case errors.As(err, &held) && held.PID != 0:
		fmt.Fprintf(stderr, "vipd: another vipd (pid %d) is running: %s is locked\n", held.PID, held.Path)
	case errors.As(err, &held):
		fmt.Fprintf(stderr, "vipd: another vipd is running: %s is locked\n", held.Path)
	default:
		fmt.Fprintf(stderr, "vipd: %v\n", err)
	}
	return nil, err
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	// Under journald the journal stamps every line; a second timestamp is noise.
	if os.Getenv("JOURNAL_STREAM") != "" {
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		}
	}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

func cleanup(cfg config.Config, log *slog.Logger, stdout io.Writer) int {
	h, err := netif.NewHandle(log)
	if err != nil {
		log.Error("netlink", "err", err)
		return 1
	}
	defer h.Close()
	n, err := keeper.RemoveAll(h, cfg.Groups, log)
	fmt.Fprintf(stdout, "removed %d VIPs\n", n)
	if err != nil {
		log.Error("cleanup incomplete", "err", err)
		return 1
	}
	return 0
}

// promiseFile is where the failsafe promises this node gives are kept
// across restarts (keeper.Options.PromiseFile): systemd's StateDirectory
// (/var/lib/vipd, which survives a stop, unlike the runtime directory;
// the record names its boot, so one left from an earlier boot means
// nothing), else the runtime directory.
func promiseFile(runDir string) string {
	if d, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":"); d != "" {
		return filepath.Join(d, "promised")
	}
	return filepath.Join(runDir, "promised")
}

// run runs the daemon until SIGTERM or SIGINT (nil, err), or until it has
// handed over for a re-execution in place (the request, nil). handoff, if
// set, is what the previous image handed over.
//
// stopAsked reports a SIGTERM or SIGINT seen at any time; stopAtOnce stops
// as soon as the keeper has started (after a handover that a stop
// interrupted).
func run(cfgPath string, cfg config.Config, runDir string, log *slog.Logger, handoff *keeper.Handoff, stopAsked *atomic.Bool, stopAtOnce bool) (*reexec, error) {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if stopAtOnce {
		stop()
	}
	setGCPercent()

	cli, err := etcdclient.New(cfg.Etcd, zap.NewNop())
	if err != nil {
		return nil, err
	}
	defer cli.Close()
	// Lease renewals get a connection of their own, so a burst of group
	// writes never queues ahead of the renewal that keeps the fence open.
	leaseCli, err := etcdclient.New(cfg.Etcd, zap.NewNop())
	if err != nil {
		return nil, err
	}
	defer leaseCli.Close()

	h, err := netif.NewHandle(log)
	if err != nil {
		return nil, fmt.Errorf("netlink: %w", err)
	}
	defer h.Close()
	ann := newAnnouncers(log)
	defer ann.Close()

	clk := clock.Real{}
	reg := prometheus.NewRegistry()
	var k *keeper.Keeper
	m := metrics.New(reg, version, func() float64 {
		l := k.Session().Current()
		if l.ID == 0 {
			return 0
		}
		return l.Deadline.Sub(clk.Now()).Seconds()
	})
	var po *keeper.PeerOptions
	if cfg.Peer.Listen != "" {
		key, err := peer.LoadKey(cfg.Peer.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("peer.key_file: %w", err)
		}
		ln, err := net.Listen("tcp", cfg.Peer.Listen)
		if err != nil {
			return nil, fmt.Errorf("peer.listen: %w", err)
		}
		defer ln.Close()
		po = &keeper.PeerOptions{Listener: ln, Advertise: cfg.Peer.Endpoint(), Key: key, Failsafe: cfg.Peer.Failsafe}
	}
	k = keeper.New(keeper.Options{
		Config: cfg, Client: cli, Clock: clk, Log: log,
		Ifaces: h, Announce: ann.Announce, Observer: m, LeaseClient: leaseCli, Peer: po,
		PromiseFile: promiseFile(runDir), Handoff: handoff, Movers: mover.Factory(log),
	})

	var wg sync.WaitGroup
	defer wg.Wait()
	if cfg.Metrics.Listen != "" {
		wait, err := metrics.Serve(ctx, cfg.Metrics.Listen, metrics.Handler(reg, k.Ready), log)
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := wait(); err != nil {
				log.Error("metrics server stopped", "err", err)
			}
		}()
	}
	var reqMu sync.Mutex
	var req *reexec
	request := func(bin string) bool {
		reqMu.Lock()
		defer reqMu.Unlock()
		if ctx.Err() != nil || stopAsked.Load() {
			return false // stopping: a stop is not turned into a re-execution
		}
		// SIGHUP's default action would kill vipd once reloadLoop has
		// stopped listening; ignored, it (and SIGUSR2) stays so across
		// the exec until the next image listens (Notify installs a
		// handler again).
		signal.Ignore(syscall.SIGHUP, syscall.SIGUSR2)
		req = &reexec{bin: bin}
		k.Detach()
		stop()
		return true
	}
	wg.Add(3)
	go func() { defer wg.Done(); systemdLoop(ctx, k, log) }()
	go func() { defer wg.Done(); reloadLoop(ctx, cfgPath, k, log) }()
	go func() { defer wg.Done(); reexecLoop(ctx, cfgPath, cfg, k, log, request) }()

	log.Info("vipd starting", "version", version, "node", cfg.Node, "groups", len(cfg.Groups),
		"endpoints", strings.Join(cfg.Etcd.Endpoints, ","), "lease_ttl", cfg.Etcd.LeaseTTL, "handed_over", handoff != nil)
	err = k.Run(ctx)
	stop()
	reqMu.Lock()
	defer reqMu.Unlock()
	if req != nil && err == nil {
		req.handoff = k.Handoff()
		log.Info("handed over; executing the next vipd image", "binary", req.bin, "groups", len(req.handoff.Groups))
		return req, nil
	}
	_, _ = daemon.SdNotify(false, daemon.SdNotifyStopping)
	log.Info("vipd stopped")
	return nil, err
}

// daemonState is what systemd is told about.
type daemonState interface {
	Ready() (bool, string)
	Summary() string
	Alive(maxAge time.Duration) bool
}

// systemdLoop tells systemd READY=1 once every group knows its first state,
// keeps STATUS= current, and feeds the watchdog only while every group loop
// is alive, so a hung vipd is restarted. Without NOTIFY_SOCKET it only
// waits for ctx.
func systemdLoop(ctx context.Context, k daemonState, log *slog.Logger) {
	watchdog, _ := daemon.SdWatchdogEnabled(false)
	tick := time.Second
	if watchdog > 0 && watchdog/3 < tick {
		tick = watchdog / 3
	}
	t := time.NewTicker(tick)
	defer t.Stop()
	ready, status := false, ""
	started, nextSlowLog := time.Now(), slowReadyAfter
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, why := k.Ready()
		if ok && !ready {
			ready = true
			_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
			log.Info("ready: every group has a state and the lease is live", "after", time.Since(started).Round(time.Millisecond))
		}
		if since := time.Since(started); !ready && since >= nextSlowLog {
			// A start that takes this long is waiting for something an
			// operator should see (etcd, a check, a stuck group).
			log.Warn("not ready yet", "waiting_for", why, "since_start", since.Round(time.Millisecond))
			nextSlowLog *= 2
		}
		if s := k.Summary(); s != status {
			status = s
			_, _ = daemon.SdNotify(false, "STATUS="+s)
		}
		if watchdog > 0 && k.Alive(watchdog/2) {
			_, _ = daemon.SdNotify(false, daemon.SdNotifyWatchdog)
		}
	}
}

// slowReadyAfter is when a start that is not ready yet is first logged
// (then after twice as long, and so on).
const slowReadyAfter = 3 * time.Second

// reloadLoop re-reads the config on SIGHUP. An invalid or incompatible new
// config is rejected with a log line and the running one stays.
func reloadLoop(ctx context.Context, path string, k *keeper.Keeper, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReloading)
		cfg, err := config.Load(path)
		if err == nil {
			err = k.Reload(cfg)
		}
		if err != nil {
			log.Error("reload rejected; the running configuration stays", "config", path, "err", err)
		} else {
			log.Info("configuration reloaded", "config", path, "groups", len(cfg.Groups))
		}
		_, _ = daemon.SdNotify(false, daemon.SdNotifyReady)
	}
}

// announcers keeps one raw-socket announcer per interface, opened on first
// use and reopened after a failure (the interface may have been recreated).
type announcers struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*netif.Announcer
}

func newAnnouncers(log *slog.Logger) *announcers {
	return &announcers{log: log, by: map[string]*netif.Announcer{}}
}

func (a *announcers) Announce(ifname string, ip netip.Addr, gate netif.Gate) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	an := a.by[ifname]
	if an == nil {
		var err error
		if an, err = netif.DialAnnouncer(ifname, a.log); err != nil {
			return err
		}
		a.by[ifname] = an
	}
	if err := an.Announce(ip, gate); err != nil {
		if !errors.Is(err, netif.ErrGateClosed) {
			an.Close()
			delete(a.by, ifname)
		}
		return err
	}
	return nil
}

func (a *announcers) Close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for name, an := range a.by {
		an.Close()
		delete(a.by, name)
	}
}

// moverSummary says what a group's mover does, for vipd check ("" for none).
func moverSummary(m config.Mover) string {
	every := fmt.Sprintf("checked every %v, each call at most %v and never past the fence (docs/cloud.md)", m.Interval, m.Timeout)
	switch m.Type {
	case "exec":
		return fmt.Sprintf("mover exec %s, %s", strings.Join(m.Command, " "), every)
	case "aws":
		a := m.AWS
		var what []string
		if a.PrivateIP {
			what = append(what, "the addresses as secondary private IPs")
		}
		if a.ElasticIP != "" {
			what = append(what, "Elastic IP "+a.ElasticIP)
		}
		if len(a.RouteTables) > 0 {
			what = append(what, "routes in "+strings.Join(a.RouteTables, ", "))
		}
		where := "this instance's primary interface"
		if a.NetworkInterface != "" {
			where = a.NetworkInterface
		}
		region := a.Region
		if region == "" {
			region = "this instance's region"
		}
		return fmt.Sprintf("mover aws: %s to %s (%s; IMDSv2 for what is not configured), %s", strings.Join(what, ", "), where, region, every)
	}
	return ""
}
