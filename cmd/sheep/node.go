package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/sheepdog-go/sheepdog/core/client"
	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/cluster/replicated"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/objcache"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/core/server"
	"github.com/sheepdog-go/sheepdog/core/vdi"
	"github.com/sheepdog-go/sheepdog/core/volume"
	"github.com/sheepdog-go/sheepdog/internal/clusterkey"
	"github.com/sheepdog-go/sheepdog/internal/daemon"
	"github.com/sheepdog-go/sheepdog/nbd"
	"github.com/sheepdog-go/sheepdog/store"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// Node is one sheep: its store, its cluster driver and the front-ends
// serving them. New opens and wires everything, Run serves until its
// context ends or the cluster shuts the node down, Close releases what
// New opened. A sheep process is one Node; tests run Nodes in-process.
type Node struct {
	cfg   Config
	log   *slog.Logger
	level *slog.LevelVar // SET_LOGLEVEL changes it while the node runs
	self  proto.Node

	lock    *os.File // DIR/lock: released last, after undo
	undo    *startUndo
	closers []func() // run in reverse order by Close

	st     *md.Store // the node's disks (one: DIR/obj)
	cl     *replicated.Driver
	h      *server.Handler
	srv    *server.Server
	nbdSrv *nbd.Server     // nil without NBD
	cache  *objcache.Cache // nil without -w
	nbdL   net.Listener
	tcp    net.Listener
	ioL    net.Listener // -i: the IO NIC; nil without
	unixL  net.Listener

	stopOnce sync.Once
	stopping chan struct{}         // closed when the cluster shuts this node down
	failed   atomic.Pointer[error] // why the node stopped itself, if it did
}

// New opens cfg.Dir's store, joins (or starts) the cluster and builds the
// front-ends, listening but not serving yet. ctx bounds the start: when
// it ends first (SIGTERM), New returns errStopped. On any failure New
// takes back what it created in the store dir.
func New(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, undo: newStartUndo(cfg.Dir), stopping: make(chan struct{})}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create store dir: %w", err)
	}
	if n.lock, err = lockDir(cfg.Dir); err != nil {
		if n.undo.madeDir {
			os.Remove(cfg.Dir)
		}
		return nil, err
	}
	defer func() {
		if err == nil {
			return
		}
		// Until the node serves, a failure (or SIGTERM) takes back what
		// this start created in the store dir.
		n.release()
		n.undo.undo()
		n.lock.Close()
		if errors.Is(err, syscall.ENOSPC) {
			err = fmt.Errorf("no space left in %s: %w", cfg.Dir, err)
		}
	}()
	if err := n.openLog(); err != nil {
		return nil, err
	}
	warnIgnored(n.log, cfg.Ignored)
	if err := n.open(ctx); err != nil {
		return nil, err
	}
	return n, nil
}

// openLog sets up sheep.log (or stdout) at the configured level.
func (n *Node) openLog() error {
	cfg := n.cfg
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
		n.onClose(func() { logf.Close() })
		logw = logf
		if cfg.Foreground && !daemon.IsChild() {
			logw = io.MultiWriter(logf, os.Stderr)
		}
	}
	n.level = new(slog.LevelVar)
	n.level.Set(cfg.Log.level)
	hopts := &slog.HandlerOptions{Level: n.level}
	var h slog.Handler = slog.NewTextHandler(logw, hopts)
	if cfg.Log.json {
		h = slog.NewJSONHandler(logw, hopts)
	}
	n.log = slog.New(h)
	return nil
}

// onClose registers f to run at Close, before everything registered
// earlier.
func (n *Node) onClose(f func()) { n.closers = append(n.closers, f) }

// release runs the closers, newest first, once.
func (n *Node) release() {
	for i := len(n.closers) - 1; i >= 0; i-- {
		n.closers[i]()
	}
	n.closers = nil
}

// open builds the node below the log: store, listeners, cluster driver,
// gateway, recovery and front-ends.
func (n *Node) open(ctx context.Context) error {
	cfg, log := n.cfg, n.log
	if cfg.Pprof != "" {
		l, err := servePprof(cfg.Pprof, log)
		if err != nil {
			return err
		}
		n.onClose(func() { l.Close() })
	}
	switch cfg.Direct {
	case store.DirectAll:
		log.Info("store writes with direct IO (-D): object data bypasses the page cache where it can")
	case store.DirectOff:
		log.Info("store writes through the page cache (--direct=off)")
	}
	st, err := md.Open(md.Config{MetaDir: cfg.Dir, Disks: cfg.Disks, NoSync: cfg.NoSync, Direct: cfg.Direct, Logger: log})
	if err != nil {
		return err
	}
	n.st = st
	n.onClose(func() { st.Close() })
	addr, err := advertised(cfg)
	if err != nil {
		return err
	}
	n.self = selfNode(cfg, addr, st)

	if err := n.listen(); err != nil {
		return err
	}
	var nbdTLS *tls.Config
	if cfg.NBDTLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.NBDTLSCert, cfg.NBDTLSKey)
		if err != nil {
			return fmt.Errorf("NBD TLS certificate: %w", err)
		}
		nbdTLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	var metricsL net.Listener
	if cfg.Metrics != "" {
		if metricsL, err = net.Listen("tcp", cfg.Metrics); err != nil {
			return fmt.Errorf("listen for metrics on %s: %w", cfg.Metrics, err)
		}
		n.onClose(func() { metricsL.Close() })
	}

	var peerTLS *clusterkey.TLS
	var gossipKey []byte
	if cfg.ClusterKey != "" {
		key, err := clusterkey.Load(cfg.ClusterKey)
		if err != nil {
			return err
		}
		if peerTLS, err = key.TLS(); err != nil {
			return err
		}
		gossipKey = key.GossipKey()
		log.Info("cluster key: gossip encrypted, peer and raft links mutual TLS")
	}

	var gossipSeeds []string // -c local's, with their gossip ports
	var dead func(string) bool
	if cfg.LocalDir != "" {
		gossip := net.JoinHostPort(addr.String(), strconv.Itoa(cmp.Or(cfg.GossipPort, replicated.DefaultGossipPort(cfg.Port))))
		reg, peers, seeds, err := registerLocal(cfg.LocalDir, n.self.NodeID.String(), gossip)
		if err != nil {
			return err
		}
		n.onClose(func() { reg.Remove() })
		cfg.Join, gossipSeeds, dead = peers, seeds, reg.Dead
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
	// The handler and recovery are built after raft, whose OnApply (run
	// on raft's goroutine) needs them: hand them over atomically.
	var handler atomic.Pointer[server.Handler]
	var recov atomic.Pointer[recovery.Recovery]
	var formatCache atomic.Pointer[objcache.Cache] // the object cache, once open
	peers := gateway.NewPeers()
	n.onClose(func() { peers.Close() })
	// A peer that goes silent holds a request for at most peerSilence
	// (TCP keepalive and user timeout), or until gossip declares it dead
	// or an epoch removes it (OnPeer below), whichever comes first.
	peers.Dialer = client.Dialer{Timeout: peerDialTimeout, Silence: peerSilence}
	if peerTLS != nil {
		peers.Dialer.TLS = peerTLS.Client
	}
	// Peers started with an IO NIC (-i) are dialled there first; their
	// records come from gossip once the driver is open.
	var members atomic.Pointer[replicated.Driver]
	peers.Log = log
	peers.Route = func(addr string) string {
		d := members.Load()
		if d == nil {
			return ""
		}
		for _, m := range d.Members() {
			if m.IOPort != 0 && m.NodeID.String() == addr {
				io := proto.NodeID{Addr: m.IOAddr, Port: m.IOPort}
				return io.String()
			}
		}
		return ""
	}
	locks := &store.Locks{}
	// stopSheep stops this sheep as a cluster shutdown does.
	stopSheep := func() {
		if h := handler.Load(); h != nil {
			h.Stopping()
		}
		go func() { time.Sleep(200 * time.Millisecond); n.stop() }()
	}
	started := time.Now()
	ccfg := replicated.DefaultConfig()
	ccfg.Dir, ccfg.Self, ccfg.BindAddr, ccfg.Join, ccfg.Log = cfg.Dir, n.self, cfg.BindAddr, cfg.Join, log
	ccfg.GossipPort, ccfg.RaftPort, ccfg.GossipSeeds, ccfg.Dead = cfg.GossipPort, cfg.RaftPort, gossipSeeds, dead
	if peerTLS != nil {
		ccfg.GossipKey, ccfg.RaftServerTLS, ccfg.RaftClientTLS = gossipKey, peerTLS.Server, peerTLS.Client
	}
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
		case (e.Kind == cluster.KindEpoch || e.Kind == cluster.KindRecovery || e.Kind == cluster.KindAlterCopy) && res == proto.ResSuccess:
			if rec := recov.Load(); rec != nil {
				rec.Start()
			}
		case e.Kind == cluster.KindFormat && res == proto.ResSuccess:
			if err := wipeForFormat(st, cfg.Dir, e.Ctime); err != nil {
				log.Error("wipe store for format", "err", err)
			}
			if c := formatCache.Load(); c != nil {
				c.Purge() // the VDIs it cached are gone with the format
			}
		case e.Kind == cluster.KindShutdown && e.Time >= cluster.UnixNano(started): // live, not replayed (as the driver judges it)
			log.Info("cluster shutdown")
			stopSheep()
		}
	}
	ccfg.OnPeer = func(addr string, alive bool) {
		if alive {
			peers.Up(addr)
		} else {
			peers.Down(addr)
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
	n.cl = cl
	members.Store(cl)
	n.onClose(func() { cl.Close() })
	var reg *metrics.Registry
	var native, peer, nbdMetrics *metrics.Frontend
	if cfg.Metrics != "" {
		reg = metrics.New()
		native, peer = reg.Frontend("native", server.MetricsOps), reg.Frontend("peer", server.MetricsOps)
		nbdMetrics = reg.Frontend("nbd", nbd.MetricsOps)
	}
	gw := gateway.New(n.self.NodeID, st, cl, peers, locks, log)
	rec := recovery.New(n.self.NodeID, st, cl, peers, locks, log)
	recov.Store(rec)
	if cfg.Throttle != nil {
		rec.SetThrottle(*cfg.Throttle)
	}
	gw.SetTrust(rec.Trusted)
	gw.SetSettle(rec.Settle)
	n.onClose(rec.Stop)
	// A disk plugged, unplugged or failed: recovery fetches from the
	// other nodes what the node's disks lack.
	st.SetOnChange(rec.Start)
	rec.Start() // a restarted node checks what it holds against the epoch
	n.onClose(gw.Close)
	vdis := vdi.New(gw, cl, log)
	hcfg := server.Config{
		Self: n.self, Store: st, Cluster: cl, Gateway: gw, Vdi: vdis, Log: log,
		Members: cl.Members, FixedVnodes: cfg.Vnodes > 0, Recovery: rec, Locks: locks,
		Propose: cl.ProposeEncoded, LogLevel: n.level, Stop: stopSheep, Metrics: native, PeerMetrics: peer,
		PeerAuth: peerTLS != nil, DegradedReads: gw.DegradedReads, Disks: st,
	}
	// Table writes go through core/vdi, which drops the references they
	// replace (as the native handler's do).
	var nbdObjects volume.ObjectIO = cacheBackend{quorumObjects{gw, cl}, vdis}
	if cfg.Cache != nil {
		oc, err := objcache.Open(objcache.Config{
			Dir: cfg.Cache.Dir, Size: cfg.Cache.Size, DirectIO: cfg.Cache.DirectIO,
			Backend: cacheBackend{quorumObjects{gw, cl}, vdis}, Describe: describeObjects(cl), Log: log,
		})
		if err != nil {
			return err
		}
		n.cache = oc
		n.onClose(func() { oc.Close() })
		formatCache.Store(oc)
		hcfg.Gateway, hcfg.Cache, nbdObjects = cachedObjects{oc, gw}, oc, oc
		log.Info("object cache on", "dir", cfg.Cache.Dir, "size", cfg.Cache.Size, "directio", cfg.Cache.DirectIO)
	}
	n.h = server.NewHandler(hcfg)
	handler.Store(n.h)
	n.srv = server.New(n.h, log)
	limits, peerBudget := cfg.limits(log)
	n.srv.SetLimits(limits, peerBudget)
	if peerTLS != nil {
		n.srv.SetPeerTLS(peerTLS.Server)
	}
	if n.nbdL != nil {
		n.nbdSrv = nbd.New(nbd.Config{
			Objects: nbdObjects,
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
	}
	if reg != nil {
		registerState(reg, cl, st, rec)
		registerGateway(reg, gw)
		ms := reg.Serve(metricsL, log)
		n.onClose(func() { ms.Close() })
		log.Info("metrics serving", "addr", ms.Addr())
	}
	if cfg.PidFile != "" {
		if err := writePidFile(cfg.PidFile); err != nil {
			return err
		}
		n.onClose(func() { os.Remove(cfg.PidFile) })
	}
	return nil
}

// selfNode is the node record this sheep announces.
func selfNode(cfg Config, addr netip.Addr, st *md.Store) proto.Node {
	self := proto.Node{NodeID: proto.NodeIDFromAddrPort(netip.AddrPortFrom(addr, uint16(cfg.Port)))}
	if cfg.IOAddr.IsValid() {
		io := proto.NodeIDFromAddrPort(cfg.IOAddr)
		self.IOAddr, self.IOPort = io.Addr, io.Port
	}
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
	return self
}

// listen opens the native TCP port, DIR/sock and the NBD port.
func (n *Node) listen() (err error) {
	cfg := n.cfg
	if n.tcp, err = net.Listen("tcp", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.Port))); err != nil {
		return fmt.Errorf("listen on port %d: %w", cfg.Port, err)
	}
	n.onClose(func() { n.tcp.Close() })
	if cfg.IOAddr.IsValid() {
		if n.ioL, err = net.Listen("tcp", cfg.IOAddr.String()); err != nil {
			return fmt.Errorf("listen on the IO NIC %s: %w", cfg.IOAddr, err)
		}
		n.onClose(func() { n.ioL.Close() })
	}
	sockPath := filepath.Join(cfg.Dir, "sock")
	os.Remove(sockPath)
	if n.unixL, err = net.Listen("unix", sockPath); err != nil {
		return fmt.Errorf("listen on %s: %w", sockPath, err)
	}
	n.onClose(func() { n.unixL.Close() })
	if n.nbdL, err = listenNBD(cfg, n.log); err != nil {
		return err
	}
	if n.nbdL != nil {
		n.onClose(func() { n.nbdL.Close() })
	}
	return nil
}

// stop ends Run as a cluster shutdown does.
func (n *Node) stop() { n.stopOnce.Do(func() { close(n.stopping) }) }

// watchVnodeStrategy stops this sheep, as Sheepdog's does, when its vnode
// strategy (automatic vnodes, or fixed ones given with -V) is not its
// formatted cluster's: at a restart on a formatted store (Sheepdog's
// check of its config file), or once it joins a formatted cluster
// (cluster_join_check). The cluster sees it leave (a new epoch without
// it); Run returns the reason. Checked once. A node that was there when
// the cluster was formatted (unformatted at its first look, and in epoch
// 1) is not checked then: the format chose the strategy with it (collie
// checks every node).
func (n *Node) watchVnodeStrategy(ctx context.Context) {
	mine := n.cfg.Vnodes == 0
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	self := func(m proto.Node) bool { return m.Same(n.self.NodeID) }
	first, restarted := true, false
	for {
		formatted, member, founder, auto := false, false, false, false
		var vnodes uint16 // this node's count in the current epoch
		n.cl.View(func(s *cluster.State) {
			if formatted = s.Formatted(); formatted {
				nodes := s.Nodes()
				if i := slices.IndexFunc(nodes, self); i >= 0 {
					member, vnodes = true, nodes[i].NrVnodes
				}
				founder = slices.ContainsFunc(s.EpochNodes(1), self)
				auto = s.Flags&proto.ClusterFlagAutoVnodes != 0
			}
		})
		if first {
			first, restarted = false, formatted && member
		}
		if member {
			if auto != mine && (restarted || !founder) {
				strategy := map[bool]string{true: "auto", false: "fixed"}
				err := fmt.Errorf("failed to join for vnodes strategy unmatch: cluster:%s, joined:%s", strategy[auto], strategy[mine])
				if restarted {
					err = fmt.Errorf("designation of before a restart and a vnodes option is different: cluster:%s, this start:%s", strategy[auto], strategy[mine])
				}
				n.log.Error("failed to join Sheepdog: leaving", "err", err)
				n.failed.Store(&err)
				n.stop()
			} else if restarted && !auto && !mine && int(vnodes) != n.cfg.Vnodes {
				// Fixed vnodes: a restart keeps the count of the last
				// epoch (Sheepdog's create_cluster check).
				err := fmt.Errorf("mismatch specified vnodes is compared with the previous. previous vnodes:%d", vnodes)
				n.log.Error("failed to join Sheepdog: leaving", "err", err)
				n.failed.Store(&err)
				n.stop()
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Run serves clients until ctx ends or the cluster shuts the node down,
// then answers what clients already sent (10 s at most) and flushes the
// store. From Run on, the store dir is the store's: nothing is undone.
func (n *Node) Run(ctx context.Context) error {
	log := n.log
	go n.srv.Serve(n.tcp)
	if n.ioL != nil {
		go n.srv.Serve(n.ioL)
		log.Info("IO NIC serving", "addr", n.ioL.Addr().String())
	}
	go n.srv.Serve(n.unixL)
	if n.nbdSrv != nil {
		go func() {
			if err := n.nbdSrv.Serve(n.nbdL); !errors.Is(err, nbd.ErrServerClosed) {
				log.Error("nbd server stopped", "err", err)
			}
		}()
		log.Info("nbd serving", "addr", n.nbdL.Addr().String(), "tls", n.cfg.NBDTLSCert != "", "tls_required", n.cfg.NBDTLSRequire)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if !n.cfg.Gateway {
		go watchStore(wctx, n.cfg.Dir, 100*time.Millisecond, 2, func(err error) {
			log.Error("store failed: leaving the cluster so that its objects are recovered on the other nodes", "dir", n.cfg.Dir, "err", err)
			n.h.Fail()
			n.cl.Leave()
		})
		// Each disk is checked too: a failed one is unplugged, and the
		// node leaves when its last disk fails (with DIR alone,
		// watchStore above sees to that).
		if len(n.cfg.Disks) > 0 {
			n.st.SetOnLastFailed(func(err error) {
				log.Error("every disk failed: leaving the cluster so that the objects are recovered on the other nodes", "err", err)
				n.h.Fail()
				n.cl.Leave()
			})
		}
		go n.st.Watch(wctx, 500*time.Millisecond)
		go n.watchVnodeStrategy(wctx)
	}
	log.Info("sheep serving", "addr", n.self.NodeID.String(), "dir", n.cfg.Dir, "zone", n.self.Zone, "vnodes", n.self.NrVnodes)
	// Sheepdog's functional tests wait for this line ("daemon") in sheep.log.
	log.Info("sheepdog daemon (version "+version+") started", "pid", os.Getpid())
	daemon.Ready()
	select {
	case <-ctx.Done():
	case <-n.stopping:
	}
	log.Info("sheep stopping")
	// Answer what clients (NBD and native) already sent before the store
	// closes; both front-ends drain in parallel, 10 s at most.
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	drained := make(chan struct{})
	go func() { n.srv.Shutdown(sctx); close(drained) }()
	if n.nbdSrv != nil {
		n.nbdSrv.Shutdown(sctx)
	}
	<-drained
	scancel()
	if n.cache != nil {
		// A clean stop pushes what the cache holds (a kill drops it, see
		// core/objcache), while the other nodes may still be there.
		fctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := n.cache.Flush(fctx); err != nil {
			log.Error("object cache: flush at stop", "err", err)
		}
		cancel()
	}
	// Write-back writes not flushed by their client yet: a clean stop
	// leaves nothing for the kernel to write back later.
	if err := n.st.Flush(context.Background()); err != nil {
		log.Error("flush at stop", "err", err)
	}
	if err := n.failed.Load(); err != nil {
		return *err
	}
	return nil
}

// Close releases everything New opened, the store dir's lock last.
func (n *Node) Close() error {
	n.release()
	return n.lock.Close()
}
