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
	"context"
	"errors"
	"fmt"
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
	"syscall"
	"time"
	"unicode"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/internal/daemon"
	"github.com/sheepdog-go/sheepdog/store/md"
)

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
			&cli.StringFlag{Name: "direct", Value: "fresh", Usage: "which object writes skip the page cache (O_DIRECT, aligned writes of 64 KiB or more): fresh (first writes: a new object's data, writes where nothing was written), all (also overwrites; as -D) or off"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics on ADDR (host:port) at /metrics; off by default"},
			&cli.StringFlag{Name: "nbd-tls-cert", Usage: "PEM certificate (chain) for NBD over TLS (NBD_OPT_STARTTLS)"},
			&cli.StringFlag{Name: "nbd-tls-key", Usage: "PEM private key of --nbd-tls-cert"},
			&cli.BoolFlag{Name: "nbd-tls-require", Usage: "refuse NBD clients that do not switch to TLS"},
			&cli.IntFlag{Name: "max-conns", Usage: "connections per listener (native TCP, native UNIX socket, NBD); more are closed at once (default: a quarter of the open-file limit)"},
			&cli.DurationFlag{Name: "idle-timeout", Value: time.Minute, Usage: "close a new connection that sends no request (NBD: does not finish negotiating) within this time (0: never)"},
			&cli.StringFlag{Name: "mem-budget", Value: "512M", Usage: "request and reply payloads held for clients, all connections of all front-ends together (3/4 for clients, 1/4 for peer sheeps); a connection that does not read its replies stops being read from"},
			&cli.StringFlag{Name: "cluster-key", Usage: "FILE holding the cluster's secret (at least 16 bytes; the same file on every node): gossip is encrypted, peer and raft links are mutual TLS, and peer-only ops are refused from anyone else"},
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
	cfg := DefaultConfig()
	cfg.Dir, cfg.BindAddr, cfg.MyAddr = c.Args().First(), c.String("bind"), c.String("myaddr")
	cfg.Dir, cfg.Disks = splitStoreDirs(cfg.Dir)
	cfg.NBDAddr, cfg.NBDDefault, cfg.Gateway = c.String("nbd"), !c.IsSet("nbd"), c.Bool("gateway")
	cfg.Foreground, cfg.NoSync, cfg.Log, cfg.Metrics = c.Bool("foreground"), c.Bool("nosync"), logOpts, c.String("metrics")
	if cfg.Direct, err = directMode(c.String("direct"), c.IsSet("direct"), c.Bool("directio")); err != nil {
		return err
	}
	cfg.Pprof, cfg.PidFile, cfg.Ignored = c.String("pprof"), c.String("pidfile"), ignoredOptions(c)
	cfg.ClusterKey = c.String("cluster-key")
	cfg.NBDTLSCert, cfg.NBDTLSKey, cfg.NBDTLSRequire = c.String("nbd-tls-cert"), c.String("nbd-tls-key"), c.Bool("nbd-tls-require")
	if err := sheepdogOptions(c, &cfg); err != nil {
		return err
	}
	if w := c.String("wq-threads"); isCacheOptions(w) {
		if cfg.Cache, err = parseCacheOptions(w, cfg.Dir); err != nil {
			return err
		}
	}
	if cfg.LocalDir, err = clusterDriver(c.String("cluster")); err != nil {
		return err
	}
	cfg.MaxConns, cfg.IdleTimeout = c.Int("max-conns"), c.Duration("idle-timeout")
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
	if err := cfg.Validate(); err != nil {
		return err
	}
	if !cfg.Foreground && !daemon.IsChild() {
		return daemon.Detach("serving")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	n, err := New(ctx, cfg)
	if errors.Is(err, errStopped) {
		return nil
	}
	if err != nil {
		return err
	}
	defer n.Close()
	return n.Run(ctx)
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

func wipeForFormat(st *md.Store, dir string, ctime uint64) error {
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

// checkJoinWait bounds how long checkJoin waits for one node's answer. A
// node that is starting too (a whole -c local cluster restarted at once)
// listens before it serves, and answers only once its own start is done:
// waiting for it without a bound made every restarting node wait for the
// others' timeouts. The check is best-effort: the cluster driver refuses
// a node of another cluster at gossip too.
const checkJoinWait = 2 * time.Second

// checkJoin refuses to join a cluster other than the one this store dir
// belongs to (a different ctime), with a clear message. It asks the nodes
// of join in turn, skipping one that does not answer within checkJoinWait.
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
		buf, err := askClusterInfo(ctx, addr)
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

// askClusterInfo asks the node at addr for CLUSTER_INFO, waiting at most
// checkJoinWait.
func askClusterInfo(ctx context.Context, addr string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, checkJoinWait)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	req := proto.NewRequest(proto.OpClusterInfo)
	buf := make([]byte, proto.ClusterInfoSize)
	if _, _, err := c.Call(ctx, &req, nil, buf); err != nil {
		return nil, err
	}
	return buf, nil
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
