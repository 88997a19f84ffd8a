package main

import (
	"sync"
	"time"

	"github.com/sheepdog-go/sheepdog/core/cluster"
	"github.com/sheepdog-go/sheepdog/core/gateway"
	"github.com/sheepdog-go/sheepdog/core/metrics"
	"github.com/sheepdog-go/sheepdog/core/proto"
	"github.com/sheepdog-go/sheepdog/core/recovery"
	"github.com/sheepdog-go/sheepdog/store/md"
)

// registerState registers the gauges and counters read from the node's
// state at each scrape: the cluster (epoch, members, VDIs, locks), the
// store (objects, bytes, capacity, checksums) and recovery.
func registerState(reg *metrics.Registry, cl cluster.Driver, st *md.Store, rec *recovery.Recovery) {
	view := func(f func(s *cluster.State) float64) func() float64 {
		return func() float64 {
			var v float64
			cl.View(func(s *cluster.State) { v = f(s) })
			return v
		}
	}
	reg.Gauge("epoch", "The cluster's current epoch (0 before format).", view(func(s *cluster.State) float64 { return float64(s.Epoch()) }))
	reg.Gauge("cluster_members", "Nodes in the current epoch.", view(func(s *cluster.State) float64 { return float64(len(s.Nodes())) }))
	reg.Gauge("cluster_running", "1 when the cluster is formatted and serving, else 0.", view(func(s *cluster.State) float64 {
		if s.Status() == proto.StatusOK {
			return 1
		}
		return 0
	}))
	reg.Gauge("vdis", "VDIs and snapshots that are not deleted.", view(func(s *cluster.State) float64 {
		n := 0
		for _, v := range s.Vdis {
			if !v.Deleted {
				n++
			}
		}
		return float64(n)
	}))
	reg.Gauge("vdi_locks", "VDIs locked by a client (QEMU's open).", view(func(s *cluster.State) float64 { return float64(len(s.LockTokens)) }))

	objs := &objectCount{st: st}
	reg.Gauge("objects", "Objects this node stores (listed at most every 5 s).", func() float64 { return float64(objs.get()) })
	reg.Gauge("stored_bytes", "Bytes the filesystem allocated to this node's objects.", func() float64 {
		n, _ := st.Used()
		return float64(n)
	})
	reg.Gauge("store_capacity_bytes", "Size of the store's filesystem.", func() float64 {
		n, _, _ := st.Capacity()
		return float64(n)
	})
	reg.Gauge("store_free_bytes", "Free bytes on the store's filesystem.", func() float64 {
		_, n, _ := st.Capacity()
		return float64(n)
	})
	reg.Gauge("store_dirty_objects", "Objects written without sync and not yet flushed.", func() float64 { return float64(st.Stats().Dirty) })
	reg.Counter("store_flushes_total", "Flush passes run by the store.", func() float64 { return float64(st.Stats().Flushes) })
	reg.Counter("checksum_failures_total", "Reads refused because a chunk failed its checksum.", func() float64 {
		return float64(st.Stats().ChecksumFailures)
	})
	reg.Counter("repaired_chunks_total", "Chunks rewritten from a good copy after failing their checksum.", func() float64 {
		return float64(st.Stats().RepairedChunks)
	})
	reg.Gauge("disks", "Disks the node's objects are on (sheep DIR,DISK...; 1 for DIR alone).", func() float64 { return float64(st.Disks()) })
	reg.Counter("disk_failures_total", "Disks taken out because their I/O failed.", func() float64 { return float64(st.Failures()) })

	reg.Gauge("recovery_running", "1 while this node recovers objects for the current epoch.", func() float64 {
		if rec.State().InRecovery {
			return 1
		}
		return 0
	})
	reg.Gauge("recovery_objects", "Objects the current (or last) recovery run has to check.", func() float64 { return float64(rec.State().NrTotal) })
	reg.Gauge("recovery_objects_done", "Objects the current (or last) recovery run has checked.", func() float64 { return float64(rec.State().NrFinished) })
	reg.Gauge("recovery_objects_remaining", "Objects the current recovery run has still to check.", func() float64 {
		s := rec.State()
		if !s.InRecovery || s.NrFinished > s.NrTotal {
			return 0
		}
		return float64(s.NrTotal - s.NrFinished)
	})
}

// registerGateway registers the counters of the node's gateway.
func registerGateway(reg *metrics.Registry, gw *gateway.Gateway) {
	reg.Counter("ec_degraded_reads_total", "Reads of erasure-coded objects served by rebuilding data strips from parity.", func() float64 {
		return float64(gw.DegradedReads())
	})
}

// objectCount lists the store at most every 5 s: a scrape every few
// seconds must not walk a large object directory each time.
type objectCount struct {
	st   *md.Store
	mu   sync.Mutex
	at   time.Time
	last int
}

func (o *objectCount) get() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	if time.Since(o.at) > 5*time.Second {
		if l, err := o.st.List(); err == nil {
			o.last = len(l)
		}
		o.at = time.Now()
	}
	return o.last
}
