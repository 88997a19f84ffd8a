// Sheep is the daemon of a sheepdog-go cluster: it stores objects in DIR,
// serves the native Sheepdog protocol on -p (default 7000) and on DIR/sock.
//
//	sheep [options] DIR
//
// Like Sheepdog's sheep it detaches into the background unless -f is given;
// the parent returns once the daemon is serving, or prints why it failed.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/server"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config is everything a sheep is started with; the flags fill it.
type Config struct {
	Dir        string
	Port       int
	BindAddr   string
	MyAddr     string
	NBDAddr    string
	Zone       int64 // -1: derived from the address
	Vnodes     int   // 0: default
	Gateway    bool
	Foreground bool
	NoSync     bool
	LogLevel   slog.Level
}

// readyFD is the descriptor a detached child reports readiness on.
const readyFD = 3

const envDaemon = "SHEEP_DAEMON_CHILD"

func main() {
	app := &cli.App{
		Name:      "sheep",
		Usage:     "a sheepdog-go storage node",
		ArgsUsage: "DIR",
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 7000, Usage: "protocol port"},
			&cli.StringFlag{Name: "bind", Aliases: []string{"b"}, Value: "0.0.0.0", Usage: "address to listen on"},
			&cli.StringFlag{Name: "myaddr", Aliases: []string{"y"}, Usage: "address other nodes and clients reach this node at (default: the bind address, or the first non-loopback address)"},
			&cli.StringFlag{Name: "nbd", Value: "none", Usage: "NBD listen address, or none"},
			&cli.Int64Flag{Name: "zone", Aliases: []string{"z"}, Value: -1, Usage: "zone id (default: from the address)"},
			&cli.IntFlag{Name: "vnodes", Aliases: []string{"V"}, Usage: "fixed number of virtual nodes"},
			&cli.BoolFlag{Name: "gateway", Aliases: []string{"g"}, Usage: "gateway only: store no data"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "do not detach"},
			&cli.BoolFlag{Name: "nosync", Aliases: []string{"n"}, Usage: "do not fsync object writes (testing only)"},
			&cli.StringFlag{Name: "log", Aliases: []string{"l"}, Value: "level=info", Usage: "log options: level=debug|info|warning|error"},
		},
		Action: run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "sheep: %v\n", err)
		os.Exit(1)
	}
}

func parseLog(s string) (slog.Level, error) {
	lvl := slog.LevelInfo
	for _, kv := range strings.Split(s, ",") {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "level":
			switch v {
			case "debug":
				lvl = slog.LevelDebug
			case "info", "notice":
				lvl = slog.LevelInfo
			case "warning", "warn":
				lvl = slog.LevelWarn
			case "err", "error", "crit", "alert", "emerg":
				lvl = slog.LevelError
			default:
				return 0, fmt.Errorf("unknown log level %q", v)
			}
		case "", "dir", "format", "dst":
		default:
			return 0, fmt.Errorf("unknown log option %q", k)
		}
	}
	return lvl, nil
}

func run(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("exactly one store directory expected (sheep [options] DIR)")
	}
	lvl, err := parseLog(c.String("log"))
	if err != nil {
		return err
	}
	cfg := Config{
		Dir: c.Args().First(), Port: c.Int("port"), BindAddr: c.String("bind"), MyAddr: c.String("myaddr"),
		NBDAddr: c.String("nbd"), Zone: c.Int64("zone"), Vnodes: c.Int("vnodes"), Gateway: c.Bool("gateway"),
		Foreground: c.Bool("foreground"), NoSync: c.Bool("nosync"), LogLevel: lvl,
	}
	if cfg.Port <= 0 || cfg.Port > 65535 {
		return fmt.Errorf("bad port %d", cfg.Port)
	}
	if cfg.Vnodes < 0 || cfg.Vnodes > 65535 {
		return fmt.Errorf("bad vnodes %d", cfg.Vnodes)
	}
	if !cfg.Foreground && os.Getenv(envDaemon) == "" {
		return detach()
	}
	return serve(cfg)
}

// detach re-executes the program in a new session and waits until the
// child says it is serving (a line on fd 3), or relays its error.
func detach() error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	cmd.Env = append(os.Environ(), envDaemon+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	cmd.ExtraFiles = []*os.File{wr}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	wr.Close()
	msg, _ := io.ReadAll(rd)
	if strings.HasPrefix(string(msg), "ready") {
		return nil
	}
	cmd.Wait()
	if s := strings.TrimSpace(stderr.String()); s != "" {
		fmt.Fprintln(os.Stderr, s)
		os.Exit(1)
	}
	return fmt.Errorf("daemon exited before serving")
}

// notifyReady tells a waiting parent we serve, then drops the stderr it
// reads from.
func notifyReady() {
	if os.Getenv(envDaemon) == "" {
		return
	}
	f := os.NewFile(readyFD, "ready")
	f.Write([]byte("ready\n"))
	f.Close()
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		unix.Dup2(int(null.Fd()), 1)
		unix.Dup2(int(null.Fd()), 2)
	}
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

func serve(cfg Config) error {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return fmt.Errorf("create store dir: %w", err)
	}
	lock, err := lockDir(cfg.Dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "sheep.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("open log: %w", err)
	}
	defer logf.Close()
	var logw io.Writer = logf
	if cfg.Foreground && os.Getenv(envDaemon) == "" {
		logw = io.MultiWriter(logf, os.Stderr)
	}
	log := slog.New(slog.NewTextHandler(logw, &slog.HandlerOptions{Level: cfg.LogLevel}))

	st, err := store.Open(store.Config{Dir: cfg.Dir, NoSync: cfg.NoSync, Logger: log})
	if err != nil {
		return err
	}
	defer st.Close()
	cl, err := cluster.OpenLocal(cfg.Dir)
	if err != nil {
		return err
	}

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
	if size, _, err := st.Capacity(); err == nil {
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

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	gw := gateway.New(st, cl)
	h := server.NewHandler(server.Config{
		Self: self, Store: st, Cluster: cl, Gateway: gw, Vdi: vdi.New(gw, cl, log), Log: log,
		Members:  func() []proto.Node { return []proto.Node{self} },
		Shutdown: stop,
	})
	srv := server.New(h, log)
	go srv.Serve(tcp)
	go srv.Serve(unixL)
	log.Info("sheep serving", "addr", self.NodeID.String(), "dir", cfg.Dir, "zone", self.Zone, "vnodes", self.NrVnodes)
	notifyReady()
	<-ctx.Done()
	log.Info("sheep stopping")
	srv.Close()
	return nil
}
