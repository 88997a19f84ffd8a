// Sheepfs mounts a sheepdog-go cluster and its volumes as a FUSE file
// system, for plain tools (cat, dd, cp, cmp):
//
//	sheepfs [-a HOST] [-p PORT] [-f] [-k] MOUNTPOINT
//
// The layout (cluster/info, vdi/list, vdi/mount, volume/NAME, ...) is
// described in package fuse. The text files are rendered by running the
// collie binary found next to sheepfs or on PATH, as Sheepdog's sheepfs
// runs dog.
//
// Like sheep it detaches into the background unless -f is given; the
// parent returns once the file system is mounted, or prints why it could
// not be. SIGTERM and SIGINT unmount it (lazily when it is busy);
// fusermount3 -u works too.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"log/syslog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/fuse"
	"github.com/sheepdog-go/sheepdog/internal/daemon"
)

func main() {
	app := &cli.App{
		Name:      "sheepfs",
		Usage:     "mount a sheepdog-go cluster and its volumes as a file system",
		ArgsUsage: "MOUNTPOINT",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "address", Aliases: []string{"a"}, Value: "127.0.0.1", Usage: "sheep address"},
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: 7000, Usage: "sheep port"},
			&cli.BoolFlag{Name: "foreground", Aliases: []string{"f"}, Usage: "do not detach"},
			&cli.BoolFlag{Name: "pagecache", Aliases: []string{"k"}, Usage: "use the kernel page cache for volumes (default: direct I/O)"},
			&cli.BoolFlag{Name: "objectcache", Usage: "write volumes through the sheep's object cache (sheep -w): fsync flushes them (FLUSH_VDI)"},
			&cli.BoolFlag{Name: "debug", Aliases: []string{"d"}, Usage: "print every FUSE request (implies -f)"},
			&cli.DurationFlag{Name: "timeout", Aliases: []string{"t"}, Value: 30 * time.Second, Usage: "give up on a sheep that does not answer within this time (EIO)"},
			&cli.StringFlag{Name: "log", Aliases: []string{"l"}, Usage: "log file (default: stderr with -f, syslog otherwise)"},
			&cli.StringFlag{Name: "collie", Usage: "collie binary (default: next to sheepfs, then PATH)"},
			&cli.StringFlag{Name: "metrics", Usage: "serve Prometheus metrics of volume I/O on ADDR (host:port) at /metrics; off by default"},
			&cli.BoolFlag{Name: "allow-other", Usage: "let every user in (the kernel then checks the modes; needs user_allow_other in /etc/fuse.conf unless root)"},
		},
		Action: run,
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "sheepfs: %v\n", err)
		os.Exit(1)
	}
}

func run(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("exactly one mount point expected (sheepfs [options] MOUNTPOINT)")
	}
	port := c.Int("port")
	if port < 1 || port > 65535 {
		return fmt.Errorf("invalid port number %d", port)
	}
	host := c.String("address")
	if net.ParseIP(host) == nil {
		if _, err := net.LookupHost(host); err != nil {
			return fmt.Errorf("invalid address %s: %v", host, err)
		}
	}
	if c.Duration("timeout") <= 0 {
		return fmt.Errorf("the timeout must be positive")
	}
	dir, err := fuse.CheckMountpoint(c.Args().First())
	if err != nil {
		return err
	}
	foreground := c.Bool("foreground") || c.Bool("debug")
	child := daemon.IsChild()
	cfg := fuse.Config{
		Addr:        net.JoinHostPort(host, strconv.Itoa(port)),
		Collie:      findCollie(c.String("collie")),
		PageCache:   c.Bool("pagecache"),
		Timeout:     c.Duration("timeout"),
		AllowOther:  c.Bool("allow-other"),
		ObjectCache: c.Bool("objectcache"),
	}
	if !child {
		if cfg.Collie == "" {
			fmt.Fprintln(os.Stderr, "sheepfs: warning: collie not found next to sheepfs or on PATH; cluster/info, vdi/list and node/* will say so")
		}
		warnUnreachable(cfg.Addr)
	}
	if !foreground && !child {
		return daemon.Detach("mounting")
	}
	logger, closeLog, err := newLogger(c.String("log"), foreground && !child)
	if err != nil {
		return err
	}
	defer closeLog()
	cfg.Log = logger
	if addr := c.String("metrics"); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", addr, err)
		}
		reg := metrics.New()
		cfg.Metrics = reg.Frontend("sheepfs", fuse.MetricsOps)
		defer reg.Serve(l, logger).Close()
	}
	return serve(cfg, dir, c.Bool("debug"))
}

func serve(cfg fuse.Config, dir string, debug bool) error {
	f := fuse.New(cfg)
	server, err := f.Mount(dir, debug)
	if err != nil {
		return err
	}
	cfg.Log.Info("mounted", "mountpoint", dir, "sheep", cfg.Addr, "collie", cfg.Collie, "page_cache", cfg.PageCache)
	daemon.Ready()

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cfg.Log.Info("unmounting", "signal", sig.String())
		if err := fuse.Unmount(server, dir); err != nil {
			cfg.Log.Error("unmount", "err", err)
		}
		sig = <-sigs
		cfg.Log.Warn("exiting without waiting for the mount's users", "signal", sig.String())
		f.Close()
		os.Exit(1)
	}()
	server.Wait()
	f.Close()
	cfg.Log.Info("unmounted", "mountpoint", dir)
	return nil
}

// findCollie picks the collie binary: the flag, the one installed next to
// sheepfs, then PATH.
func findCollie(flag string) string {
	if flag != "" {
		return flag
	}
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "collie")
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("collie"); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	return ""
}

// warnUnreachable tells the user at once when the sheep does not answer;
// the mount still goes ahead (the sheep may come up later).
func warnUnreachable(addr string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, addr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sheepfs: warning: %v; volumes and reports fail until it is up\n", err)
		return
	}
	c.Close()
}

// newLogger logs to file if given, else to stderr in the foreground, else
// to syslog (or nowhere when there is no syslog).
func newLogger(file string, foreground bool) (*slog.Logger, func(), error) {
	var w io.Writer = io.Discard
	closeFn := func() {}
	switch {
	case file != "":
		fh, err := os.OpenFile(file, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err != nil {
			return nil, nil, fmt.Errorf("open log: %w", err)
		}
		w, closeFn = fh, func() { fh.Close() }
	case foreground:
		w = os.Stderr
	default:
		if sl, err := syslog.New(syslog.LOG_DAEMON|syslog.LOG_INFO, "sheepfs"); err == nil {
			w, closeFn = sl, func() { sl.Close() }
		}
	}
	return slog.New(slog.NewTextHandler(w, nil)), closeFn, nil
}
