// Sheep is the daemon of a sheepdog-go cluster: it stores objects in DIR,
// serves the native Sheepdog protocol on -p (default 7000) and on DIR/sock.
//
//	sheep [options] DIR [options]
//
// It takes Sheepdog 1.0's options too, in any order (args.go).
//
// Like Sheepdog's sheep it detaches into the background unless -f is given;
// the parent returns once the daemon is serving, or prints why it failed.
package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/cluster/replicated"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/core/server"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/internal/daemon"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
	"github.com/sheepdog-go/sheepdog/nbd"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config is everything a sheep is started with; the flags fill it.
type Config struct {
	Dir        string
	Port       int
	BindAddr   string
	MyAddr     string
	NBDAddr    string
	NBDDefault bool  // NBDAddr is the default, not asked for
	Zone       int64 // -1: derived from the address
	Vnodes     int   // 0: default
	Gateway    bool
	Join       []string // protocol addresses of running sheeps
	Foreground bool
	NoSync     bool
	Log        logOptions
	Metrics    string // address of the Prometheus endpoint; "" for none
	// Limits bound every front-end's connections and buffers (flags
	// --max-conns, --idle-timeout, --mem-budget).
	// NBD over TLS (STARTTLS): certificate and key files; TLS required.
	NBDTLSCert, NBDTLSKey string
	NBDTLSRequire         bool
	MaxConns              int
	IdleTimeout           time.Duration
	MemBudget             int64
	Pprof                 string // loopback address for /debug/pprof, "" for none
	// Sheepdog's options (args.go, local.go).
	GossipPort, RaftPort int                // 0: derived from Port
	Throttle             *recovery.Throttle // -R; nil: the default
	PidFile              string             // -P
	LocalDir             string             // -c local: the registry; "" without -c local
	Ignored              []string           // options accepted with no meaning here
}

// defaultMemBudget is --mem-budget's default: the request and reply
// payloads a sheep holds for all its clients at once.
const defaultMemBudget = 512 << 20

// defaultNBDAddr is where NBD is served unless --nbd says otherwise (the
// IANA port of NBD).
const defaultNBDAddr = ":10809"

func main() {
	app := &cli.App{
		Name:      "sheep",
		Usage:     "a sheepdog-go storage node",
		ArgsUsage: "DIR",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "port", Aliases: []string{"p"}, Value: "7000", Usage: "protocol port"},
			&cli.StringFlag{Name: "bind", Aliases: []string{"b"}, Value: "0.0.0.0", Usage: "address to listen on"},
			&cli.StringFlag{Name: "myaddr", Aliases: []string{"y"}, Usage: "address other nodes and clients reach this node at (default: the bind address, or the first non-loopback address)"},
			&cli.StringFlag{Name: "nbd", Value: defaultNBDAddr, Usage: "NBD listen address (host:port), or none (default: port 10809 on the -b address)"},
			&cli.StringFlag{Name: "zone", Aliases: []string{"z"}, Usage: "zone id (default: from the address)"},
			&cli.StringFlag{Name: "vnodes", Aliases: []string{"V"}, Usage: "fixed number of virtual nodes"},
			&cli.BoolFlag{Name: "gateway", Aliases: []string{"g"}, Usage: "gateway only: store no data"},
			&cli.StringFlag{Name: "join", Aliases: []string{"j"}, Usage: "HOST:PORT[,HOST:PORT...] of running sheeps to join (-j dir=,size=,skip: Sheepdog's journal options, accepted with no meaning here)"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "do not detach"},
			&cli.BoolFlag{Name: "nosync", Aliases: []string{"n"}, Usage: "do not fsync object writes (testing only)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on ADDR (host:port) at /metrics; off by default"},
			&cli.StringFlag{Name: "nbd-tls-cert", Usage: "PEM certificate (chain) for NBD over TLS (NBD_OPT_STARTTLS)"},
			&cli.StringFlag{Name: "nbd-tls-key", Usage: "PEM private key of --nbd-tls-cert"},
			&cli.BoolFlag{Name: "nbd-tls-require", Usage: "refuse NBD clients that do not switch to TLS"},
			&cli.IntFlag{Name: "max-conns", Usage: "connections per listener (native TCP, native UNIX socket, NBD); more are closed at once (default: a quarter of the open-file limit)"},
			&cli.DurationFlag{Name: "idle-timeout", Value: time.Minute, Usage: "close a new connection that sends no request (NBD: does not finish negotiating) within this time (0: never)"},
			&cli.StringFlag{Name: "mem-budget", Value: "512M", Usage: "request and reply payloads held for clients, all connections of all front-ends together (3/4 for clients, 1/4 for peer sheeps); a connection that does not read its replies stops being read from"},
			&cli.StringFlag{Name: "pprof", Usage: "serve Go profiles (CPU, trace, block, mutex) on this loopback HOST:PORT; off by default"},
			&cli.StringFlag{Name: "log", Aliases: []string{"l"}, Value: "level=info", Usage: "log options: level=debug|info|warning|error, dir=DIR (for sheep.log; default: the store dir), format=default|json, dst=default|stdout"},
		},
		Action: run,
	}
	app.Flags = append(app.Flags, sheepdogFlags...)
	if err := app.Run(reorderArgs(os.Args, flagArity(app.Flags))); err != nil {
		if errors.As(err, new(usageError)) {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Fprintf(os.Stderr, "sheep: %v\n", err)
		os.Exit(1)
	}
}

// logOptions are sheep's -l options, as Sheepdog's: level, dir (where
// sheep.log goes; the store dir by default), format (default/server: text;
// json) and dst (default: the log file; stdout). syslog is not offered.
type logOptions struct {
	level slog.Level
	dir   string
	json  bool
	dst   string
}

func parseLog(s string) (logOptions, error) {
	o := logOptions{level: slog.LevelInfo, dst: "default"}
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "level":
			switch v {
			case "debug":
				o.level = slog.LevelDebug
			case "info", "notice":
				o.level = slog.LevelInfo
			case "warning", "warn":
				o.level = slog.LevelWarn
			case "err", "error", "crit", "alert", "emerg":
				o.level = slog.LevelError
			default:
				return o, fmt.Errorf("unknown log level %q", v)
			}
		case "dir":
			if v == "" {
				return o, fmt.Errorf("log option dir needs a directory")
			}
			o.dir = v
		case "format":
			switch v {
			case "default", "server":
				o.json = false
			case "json":
				o.json = true
			default:
				return o, fmt.Errorf("unknown log format %q (default, server or json)", v)
			}
		case "dst":
			switch v {
			case "default", "stdout":
				o.dst = v
			default:
				return o, fmt.Errorf("unknown log destination %q (default or stdout; syslog is not supported)", v)
			}
		case "":
		default:
			return o, fmt.Errorf("unknown log option %q", k)
		}
	}
	return o, nil
}

func run(c *cli.Context) error {
	if c.Bool("version") {
		fmt.Printf("Sheepdog daemon version %s\n", version)
		return nil
	}
	if c.NArg() != 1 {
		return fmt.Errorf("exactly one store directory expected (sheep [options] DIR)")
	}
	logOpts, err := parseLog(c.String("log"))
	if err != nil {
		return err
	}
	cfg := Config{
		Dir: c.Args().First(), BindAddr: c.String("bind"), MyAddr: c.String("myaddr"),
		NBDAddr: c.String("nbd"), NBDDefault: !c.IsSet("nbd"), Gateway: c.Bool("gateway"),
		Foreground: c.Bool("foreground"), NoSync: c.Bool("nosync"), Log: logOpts, Metrics: c.String("metrics"),
		Pprof: c.String("pprof"), PidFile: c.String("pidfile"), Ignored: ignoredOptions(c),
	}
	cfg.NBDTLSCert, cfg.NBDTLSKey, cfg.NBDTLSRequire = c.String("nbd-tls-cert"), c.String("nbd-tls-key"), c.Bool("nbd-tls-require")
	if (cfg.NBDTLSCert == "") != (cfg.NBDTLSKey == "") || cfg.NBDTLSRequire && cfg.NBDTLSCert == "" {
		return fmt.Errorf("--nbd-tls-cert and --nbd-tls-key go together, and --nbd-tls-require needs them")
	}
	if err := sheepdogOptions(c, &cfg); err != nil {
		return err
	}
	if cfg.LocalDir, err = clusterDriver(c.String("cluster")); err != nil {
		return err
	}
	cfg.MaxConns, cfg.IdleTimeout = c.Int("max-conns"), c.Duration("idle-timeout")
	if cfg.MaxConns < 0 || cfg.IdleTimeout < 0 {
		return fmt.Errorf("--max-conns and --idle-timeout must not be negative")
	}
	if cfg.MemBudget, err = parseBytes(c.String("mem-budget")); err != nil || cfg.MemBudget < 128<<20 {
		return fmt.Errorf("bad --mem-budget %q: a size of at least 128M (like 512M or 2G) expected", c.String("mem-budget"))
	}
	if cfg.NBDDefault && cfg.BindAddr != "" && cfg.BindAddr != "0.0.0.0" && cfg.BindAddr != "::" {
		// Bound to one address with -b: NBD too, unless asked elsewhere.
		cfg.NBDAddr = net.JoinHostPort(cfg.BindAddr, "10809")
	}
	if j := c.String("join"); j != "" && !isJournalOptions(j) {
		cfg.Join = strings.Split(j, ",")
	}
	if cfg.LocalDir != "" && len(cfg.Join) > 0 {
		return usagef("-c local finds its peers itself: --join is not taken with it")
	}
	if !cfg.Foreground && !daemon.IsChild() {
		return daemon.Detach("serving")
	}
	return serve(cfg)
}

// advertised picks the address this node is known by.
func advertised(cfg Config) (netip.Addr, error) {
	s := cfg.MyAddr
	if s == "" && cfg.BindAddr != "" && cfg.BindAddr != "0.0.0.0" && cfg.BindAddr != "::" {
		s = cfg.BindAddr
	}
	if s != "" {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Addr{}, fmt.Errorf("bad address %q: %w", s, err)
		}
		return a, nil
	}
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && !ipn.IP.IsLoopback() && ipn.IP.To4() != nil {
				ip, _ := netip.AddrFromSlice(ipn.IP.To4())
				return ip, nil
			}
		}
	}
	return netip.MustParseAddr("127.0.0.1"), nil
}

// lockDir takes an exclusive lock on DIR so that two sheeps never share it.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("store dir %s is in use by another sheep", dir)
		}
		return nil, fmt.Errorf("lock %s: %w", dir, err)
	}
	f.Truncate(0)
	f.WriteString(strconv.Itoa(os.Getpid()) + "\n")
	return f, nil
}

func serve(cfg Config) (err error) {
	undo := newStartUndo(cfg.Dir)
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("create store dir: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		if undo.madeDir {
			os.Remove(cfg.Dir)
		}
		return err
	}
	defer lock.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	// Until the sheep serves, a failure (or SIGTERM) takes back what this
	// start created in the store dir; from then on the dir is the store's.
	serving := false
	defer func() {
		if serving {
			return
		}
		undo.undo()
		if errors.Is(err, errStopped) {
			err = nil
		} else if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("no space left in %s: %w", cfg.Dir, err)
		}
	}()
	var logw io.Writer = os.Stdout
	if cfg.Log.dst != "stdout" {
		logDir := cmp.Or(cfg.Log.dir, cfg.Dir)
		if err := os.MkdirAll(logDir, 0o755); err != nil {
			return fmt.Errorf("create log dir: %w", err)
		}
		logf, err := os.OpenFile(filepath.Join(logDir, "sheep.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return fmt.Errorf("open log: %w", err)
		}
		defer logf.Close()
		logw = logf
		if cfg.Foreground && !daemon.IsChild() {
			logw = io.MultiWriter(logf, os.Stderr)
		}
	}
	// The level is a LevelVar so that SET_LOGLEVEL (dog node log level
	// set) changes it while the sheep runs.
	level := new(slog.LevelVar)
	level.Set(cfg.Log.level)
	hopts := &slog.HandlerOptions{Level: level}
	var logHandler slog.Handler = slog.NewTextHandler(logw, hopts)
	if cfg.Log.json {
		logHandler = slog.NewJSONHandler(logw, hopts)
	}
	log := slog.New(logHandler)
	warnIgnored(log, cfg.Ignored)

	if cfg.Pprof != "" {
		l, err := servePprof(cfg.Pprof, log)
		if err != nil {
			return err
		}
		defer l.Close()
	}
	st, err := store.Open(store.Config{Dir: cfg.Dir, NoSync: cfg.NoSync, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	addr, err := advertised(cfg)
	if err != nil {
		return err
	}
	self := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(addr, uint16(cfg.Port)))}
	self.Zone = self.DefaultZone()
	if cfg.Zone >= 0 {
		self.Zone = uint32(cfg.Zone)
	}
	self.NrVnodes = proto.DefaultVnodes
	if cfg.Vnodes > 0 {
		self.NrVnodes = uint16(cfg.Vnodes)
	}
	if size, err := st.NodeSpace(); err == nil {
		self.Space = size
	}
	if cfg.Gateway {
		self.NrVnodes, self.Space = 0, 0
	}

	tcp, err := net.Listen("tcp", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Port)))
	if err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	sockPath := filepath.Join(cfg.Dir, "sock")
	os.Remove(sockPath)
	unixL, err := net.Listen("unix", sockPath)
	if err != nil {
		tcp.Close()
		return fmt.Errorf("listen on %s: %w", sockPath, err)
	}
	var nbdTLS *tls.Config
	if cfg.NBDTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.NBDTLSCert, cfg.NBDTLSKey)
		if err != nil {
			tcp.Close()
			unixL.Close()
			return fmt.Errorf("NBD TLS certificate: %w", err)
		}
		nbdTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	nbdL, err := listenNBD(cfg, log)
	if err != nil {
		tcp.Close()
		unixL.Close()
		return err
	}

	var metricsL net.Listener
	if cfg.Metrics != "" {
		if metricsL, err = net.Listen("tcp", cfg.Metrics); err != nil {
			tcp.Close()
			unixL.Close()
			if nbdL != nil {
				nbdL.Close()
			}
			return fmt.Errorf("listen for metrics on %s: %w", cfg.Metrics, err)
		}
	}

	var gossipSeeds []string // -c local's, with their gossip ports
	if cfg.LocalDir != "" {
		gossip := net.JoinHostPort(addr.String(), strconv.Itoa(cmp.Or(cfg.GossipPort, replicated.DefaultGossipPort(cfg.Port))))
		reg, peers, seeds, err := registerLocal(cfg.LocalDir, self.NodeID.String(), gossip)
		if err != nil {
			return err
		}
		defer reg.Remove()
		cfg.Join, gossipSeeds = peers, seeds
		log.Info("local cluster driver", "registry", cfg.LocalDir, "peers", peers)
	}
	if err := checkJoin(ctx, cfg.Join, cfg.Dir); err != nil {
		if daemon.IsChild() {
			// As Sheepdog's sheep: detached already when its join is
			// refused, it logs why and leaves; the command that
			// started it has succeeded.
			log.Error("join refused: leaving", "err", err)
			daemon.Ready()
		}
		return err
	}
	started := time.Now()
	// The handler and recovery are built after raft, whose OnApply (run on
	// raft's goroutine) needs them: hand them over atomically.
	var handler atomic.Pointer[server.Handler]
	peers := gateway.NewPeers()
	defer peers.Close()
	locks := &store.Locks{}
	var recov atomic.Pointer[recovery.Recovery]
	// stopSheep stops this sheep as a cluster shutdown does.
	stopSheep := func() {
		if h := handler.Load(); h != nil {
			h.Stopping()
		}
		go func() { time.Sleep(200 * time.Millisecond); stop() }()
	}
	ccfg := replicated.DefaultConfig()
	ccfg.Dir, ccfg.Self, ccfg.BindAddr, ccfg.Join, ccfg.Log = cfg.Dir, self, cfg.BindAddr, cfg.Join, log
	ccfg.GossipPort, ccfg.RaftPort, ccfg.GossipSeeds = cfg.GossipPort, cfg.RaftPort, gossipSeeds
	ccfg.Forward = func(ctx context.Context, leader string, entry []byte) (proto.Result, uint64, error) {
		req := proto.NewRequest(proto.OpClusterPropose)
		rsp, _, err := peers.Call(ctx, leader, &req, entry, nil)
		if err != nil && (rsp.Result == proto.ResSuccess || rsp.Result == proto.ResClusterError) {
			return 0, 0, err // not ordered: the caller retries
		}
		return rsp.Result, rsp.ProposeIndex(), nil
	}
	ccfg.OnApply = func(e *cluster.Entry, res proto.Result) {
		switch {
		case (e.Kind == cluster.KindEpoch || e.Kind == cluster.KindRecovery) && res == proto.ResSuccess:
			if rec := recov.Load(); rec != nil {
				rec.Start()
			}
		case e.Kind == cluster.KindFormat && res == proto.ResSuccess:
			if err := wipeForFormat(st, cfg.Dir, e.Ctime); err != nil {
				log.Error("wipe store for format", "err", err)
			}
		case e.Kind == cluster.KindShutdown && e.Time >= cluster.UnixNano(started): // live, not replayed (as the driver judges it)
			log.Info("cluster shutdown")
			stopSheep()
		}
	}
	ccfg.OnRestore = func() {
		if rec := recov.Load(); rec != nil {
			rec.Start()
		}
	}
	cl, err := interruptible(ctx, func() (*replicated.Driver, error) { return replicated.Open(ccfg) })
	if err != nil {
		return err
	}
	defer cl.Close()
	var reg *metrics.Registry
	var native, peer, nbdMetrics *metrics.Frontend
	if cfg.Metrics != "" {
		reg = metrics.New()
		native, peer = reg.Frontend("native", server.MetricsOps), reg.Frontend("peer", server.MetricsOps)
		nbdMetrics = reg.Frontend("nbd", nbd.MetricsOps)
	}
	gw := gateway.New(self.NodeID, st, cl, peers, locks, log)
	rec := recovery.New(self.NodeID, st, cl, peers, locks, log)
	recov.Store(rec)
	if cfg.Throttle != nil {
		rec.SetThrottle(*cfg.Throttle)
	}
	gw.SetTrust(rec.Trusted)
	gw.SetSettle(rec.Settle)
	defer rec.Stop()
	rec.Start() // a restarted node checks what it holds against the epoch
	defer gw.Close()
	vdis := vdi.New(gw, cl, log)
	h := server.NewHandler(server.Config{
		Self: self, Store: st, Cluster: cl, Gateway: gw, Vdi: vdis, Log: log,
		Members: cl.Members, FixedVnodes: cfg.Vnodes > 0, Recovery: rec, Locks: locks,
		Propose: cl.ProposeEncoded, LogLevel: level, Stop: stopSheep, Metrics: native, PeerMetrics: peer,
	})
	handler.Store(h)
	srv := server.New(h, log)
	limits := netlimit.DefaultConfig()
	limits.Log = log
	if cfg.MaxConns > 0 {
		limits.MaxConns = cfg.MaxConns
	}
	limits.IdleTimeout = cfg.IdleTimeout
	limits.Budget = netlimit.NewBudget(cfg.MemBudget / 4 * 3)
	// A connection's share holds at least one request of the largest
	// payload (64 MiB), or that request would be charged less than it
	// takes.
	limits.PerConn = min(max(limits.Budget.Size()/4, 64<<20), limits.Budget.Size())
	srv.SetLimits(limits, netlimit.NewBudget(cfg.MemBudget/4))
	go srv.Serve(tcp)
	go srv.Serve(unixL)
	var nbdSrv *nbd.Server
	if nbdL != nil {
		nbdSrv = nbd.New(nbd.Config{
			Objects: quorumObjects{gw, cl},
			Lookup: func(ctx context.Context, name, tag string, snapid uint32) (uint32, error) {
				info, err := vdis.Lookup(ctx, name, tag, snapid)
				return info.Vid, err
			},
			Vids:        func() []uint32 { return liveVids(cl) },
			Log:         log,
			Limits:      limits,
			TLS:         nbdTLS,
			TLSRequired: cfg.NBDTLSRequire,
			Metrics:     nbdMetrics,
		})
		go func() {
			if err := nbdSrv.Serve(nbdL); !errors.Is(err, nbd.ErrServerClosed) {
				log.Error("nbd server stopped", "err", err)
			}
		}()
		log.Info("nbd serving", "addr", nbdL.Addr().String(), "tls", nbdTLS != nil, "tls_required", cfg.NBDTLSRequire)
	}
	if reg != nil {
		registerState(reg, cl, st, rec)
		ms := reg.Serve(metricsL, log)
		defer ms.Close()
		log.Info("metrics serving", "addr", ms.Addr())
	}
	if !cfg.Gateway {
		go watchStore(ctx, cfg.Dir, 500*time.Millisecond, 2, func(err error) {
			log.Error("store failed: leaving the cluster so that its objects are recovered on the other nodes", "dir", cfg.Dir, "err", err)
			h.Fail()
			cl.Leave()
		})
	}
	log.Info("sheep serving", "addr", self.NodeID.String(), "dir", cfg.Dir, "zone", self.Zone, "vnodes", self.NrVnodes)
	if cfg.PidFile != "" {
		if err := writePidFile(cfg.PidFile); err != nil {
			return err
		}
		defer os.Remove(cfg.PidFile)
	}
	// Sheepdog's functional tests wait for this line ("daemon") in sheep.log.
	log.Info("sheepdog daemon (version "+version+") started", "pid", os.Getpid())
	serving = true
	daemon.Ready()
	<-ctx.Done()
	log.Info("sheep stopping")
	// Answer what clients (NBD and native) already sent before the store
	// closes; both front-ends drain in parallel, 10 s at most.
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	drained := make(chan struct{})
	go func() { srv.Shutdown(sctx); close(drained) }()
	if nbdSrv != nil {
		nbdSrv.Shutdown(sctx)
	}
	<-drained
	cancel()
	// Write-back writes not flushed by their client yet: a clean stop
	// leaves nothing for the kernel to write back later.
	if err := st.Flush(context.Background()); err != nil {
		log.Error("flush at stop", "err", err)
	}
	return nil
}

// listenNBD opens the NBD listener, or returns nil for --nbd none. The
// default address is best effort: when another process (often another
// sheep on this host) holds it, this sheep runs without NBD and says so.
// An address given with --nbd must work.
func listenNBD(cfg Config, log *slog.Logger) (net.Listener, error) {
	if cfg.NBDAddr == "" || cfg.NBDAddr == "none" {
		return nil, nil
	}
	l, err := net.Listen("tcp", cfg.NBDAddr)
	if err == nil {
		return l, nil
	}
	if cfg.NBDDefault && errors.Is(err, syscall.EADDRINUSE) {
		log.Warn("NBD not served: the default address is in use; pass --nbd ADDR or --nbd none", "addr", cfg.NBDAddr)
		return nil, nil
	}
	return nil, fmt.Errorf("listen for NBD on %s: %w", cfg.NBDAddr, err)
}

// liveVids lists the vids of every VDI that is not deleted.
func liveVids(cl cluster.Driver) []uint32 {
	var vids []uint32
	cl.View(func(s *cluster.State) {
		for _, v := range s.SortedVids() {
			if !s.IsDeleted(v) {
				vids = append(vids, v)
			}
		}
	})
	return vids
}

// formatMarker records the ctime of the cluster whose objects the store
// holds, so that a replayed format entry (raft replays its log at start)
// never wipes live data.
const formatMarker = "formatted"

func wipeForFormat(st *store.Store, dir string, ctime uint64) error {
	path := filepath.Join(dir, formatMarker)
	if b, err := os.ReadFile(path); err == nil && strings.TrimSpace(string(b)) == strconv.FormatUint(ctime, 16) {
		return nil
	}
	oids, err := st.List()
	if err != nil {
		return err
	}
	for _, oid := range oids {
		if err := st.Remove(context.Background(), oid); err != nil && !errors.Is(err, proto.ResNoObj) {
			return err
		}
	}
	return cluster.WriteFileSync(path, []byte(strconv.FormatUint(ctime, 16)+"\n"))
}

// checkJoin refuses to join a cluster other than the one this store dir
// belongs to (a different ctime), with a clear message.
func checkJoin(ctx context.Context, join []string, dir string) error {
	if len(join) == 0 {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, formatMarker))
	if err != nil {
		return nil // a fresh node joins anything
	}
	mine, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 16, 64)
	for _, addr := range join {
		c, err := client.Dial(ctx, addr)
		if err != nil {
			continue
		}
		req := proto.NewRequest(proto.OpClusterInfo)
		buf := make([]byte, proto.ClusterInfoSize)
		_, _, err = c.Call(ctx, &req, nil, buf)
		c.Close()
		if err != nil {
			continue
		}
		var ci proto.ClusterInfo
		if ci.Unmarshal(buf) == nil && ci.Ctime != 0 && mine != 0 && ci.Ctime != mine {
			return fmt.Errorf("store dir %s belongs to the cluster created %s, but %s is in the cluster created %s: refusing to join",
				dir, time.Unix(proto.SheepTimeSeconds(mine), 0).Format(time.RFC3339), addr, time.Unix(proto.SheepTimeSeconds(ci.Ctime), 0).Format(time.RFC3339))
		}
		return nil
	}
	return nil
}

// parseBytes reads a size: a number with an optional binary suffix K, M,
// G or T (either case).
func parseBytes(v string) (int64, error) {
	mult := int64(1)
	if n := len(v); n > 0 {
		if i := strings.IndexByte("KMGT", byte(unicode.ToUpper(rune(v[n-1])))); i >= 0 {
			mult, v = int64(1)<<(10*(i+1)), v[:n-1]
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("bad size %q", v)
	}
	return n * mult, nil
}

// errStopped ends a start interrupted by SIGTERM or SIGINT.
var errStopped = errors.New("stopped before serving")

// interruptible runs open (joining a cluster, which retries unreachable
// nodes for a while) but returns errStopped as soon as ctx ends, so that a
// signal stops a sheep in every phase of its start.
func interruptible[T any](ctx context.Context, open func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := open()
		done <- result{v, err}
	}()
	select {
	case r := <-done:
		return r.v, r.err
	case <-ctx.Done():
		var zero T
		return zero, errStopped
	}
}

// startUndo remembers what a store dir held before a start, to remove
// what the start added if it fails: the lock, the socket, raft/ and obj/
// of a fresh dir, never what was there before. sheep.log stays (it says
// why), unless the dir itself was new.
type startUndo struct {
	dir     string
	madeDir bool
	before  map[string]bool
}

func newStartUndo(dir string) *startUndo {
	u := &startUndo{dir: dir, before: map[string]bool{}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		u.madeDir = true
	}
	for _, e := range ents {
		u.before[e.Name()] = true
	}
	return u
}

func (u *startUndo) undo() {
	if u.madeDir {
		os.RemoveAll(u.dir)
		return
	}
	ents, _ := os.ReadDir(u.dir)
	for _, e := range ents {
		if !u.before[e.Name()] && e.Name() != "sheep.log" {
			os.RemoveAll(filepath.Join(u.dir, e.Name()))
		}
	}
}
