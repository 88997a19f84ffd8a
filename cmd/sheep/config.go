package main

import (
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/internal/netlimit"
	"github.com/sheepdog-go/sheepdog/store"
)

// Config is everything a sheep is started with; the flags fill it.
type Config struct {
	Dir        string
	Disks      []string // DIR,PATH1,PATH2...: the object disks; none: DIR/obj
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
	Direct     store.DirectMode // --direct, -D: which object writes skip the page cache
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
	// ClusterKey is the file of the cluster's secret (--cluster-key): with
	// it, gossip is encrypted and peer links and raft are mutual TLS
	// (internal/clusterkey). "": no key, Sheepdog's open cluster.
	ClusterKey string
	Cache      *cacheOptions // -w size=...: the object cache; nil: off
	// Sheepdog's options (args.go, local.go).
	GossipPort, RaftPort int                // 0: derived from Port
	Throttle             *recovery.Throttle // -R; nil: the default
	PidFile              string             // -P
	IOAddr               netip.AddrPort     // -i: the IO NIC's address; invalid: none
	LocalDir             string             // -c local: the registry; "" without -c local
	Ignored              []string           // options accepted with no meaning here
}

// defaultMemBudget is --mem-budget's default: the request and reply
// payloads a sheep holds for all its clients at once.
const defaultMemBudget = 512 << 20

// defaultNBDAddr is where NBD is served unless --nbd says otherwise (the
// IANA port of NBD).
const defaultNBDAddr = ":10809"

// Peer connections (docs: README "Network partitions"): connecting to a
// peer gives up after peerDialTimeout, and a connection to a peer that
// answers nothing, not even TCP acknowledgements or keepalives, breaks
// after peerSilence. Failure detection (gossip, about 1.5–3 s) usually
// fails requests over sooner; these bound the rest.
const (
	peerDialTimeout = 3 * time.Second
	peerSilence     = 5 * time.Second
)

// DefaultConfig is a sheep's configuration before any flag: the store
// dir and the peers to join are the caller's to fill.
func DefaultConfig() Config {
	return Config{
		Port:        7000,
		BindAddr:    "0.0.0.0",
		NBDAddr:     defaultNBDAddr,
		NBDDefault:  true,
		Zone:        -1,
		Log:         logOptions{level: slog.LevelInfo, dst: "default"},
		IdleTimeout: time.Minute,
		MemBudget:   defaultMemBudget,
	}
}

// Validate reports the first setting a sheep cannot start with. The
// flags' own syntax is checked where they are parsed (args.go, run).
func (c Config) Validate() error {
	switch {
	case c.Dir == "":
		return fmt.Errorf("a store directory is required")
	case c.Port < 1 || c.Port > 65535:
		return fmt.Errorf("port %d out of range 1-65535", c.Port)
	case c.GossipPort < 0 || c.GossipPort > 65535 || c.RaftPort < 0 || c.RaftPort > 65535:
		return fmt.Errorf("gossip port %d or raft port %d out of range 1-65535", c.GossipPort, c.RaftPort)
	case c.Vnodes < 0 || c.Vnodes > 65535:
		return fmt.Errorf("vnodes %d out of range 1-65535", c.Vnodes)
	case (c.NBDTLSCert == "") != (c.NBDTLSKey == "") || c.NBDTLSRequire && c.NBDTLSCert == "":
		return fmt.Errorf("--nbd-tls-cert and --nbd-tls-key go together, and --nbd-tls-require needs them")
	case c.MaxConns < 0 || c.IdleTimeout < 0:
		return fmt.Errorf("--max-conns and --idle-timeout must not be negative")
	case c.MemBudget < 128<<20:
		return fmt.Errorf("--mem-budget %d is below 128M", c.MemBudget)
	case c.LocalDir != "" && len(c.Join) > 0:
		return usagef("-c local finds its peers itself: --join is not taken with it")
	}
	return nil
}

// splitStoreDirs splits Sheepdog's store argument DIR[,PATH...]: DIR
// keeps the node's metadata, and each PATH is a disk holding objects
// (store/md); with DIR alone, objects live in DIR/obj.
func splitStoreDirs(arg string) (dir string, disks []string) {
	parts := strings.Split(arg, ",")
	for _, p := range parts[1:] {
		if p != "" {
			disks = append(disks, p)
		}
	}
	return parts[0], disks
}

// limits are the front-ends' connection and memory bounds of c.
func (c Config) limits(log *slog.Logger) (netlimit.Config, *netlimit.Budget) {
	l := netlimit.DefaultConfig()
	l.Log = log
	if c.MaxConns > 0 {
		l.MaxConns = c.MaxConns
	}
	l.IdleTimeout = c.IdleTimeout
	l.Budget = netlimit.NewBudget(c.MemBudget / 4 * 3)
	// A connection's share holds at least one request of the largest
	// payload (64 MiB), or that request would be charged less than it
	// takes.
	l.PerConn = min(max(l.Budget.Size()/4, 64<<20), l.Budget.Size())
	return l, netlimit.NewBudget(c.MemBudget / 4)
}
