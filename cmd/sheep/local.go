package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// defaultLocalDir is the registry of -c local when none is given: the
// place Sheepdog's local driver keeps its shared file (/tmp/sheepdog_shm).
const defaultLocalDir = "/tmp/sheepdog-go-local"

// clusterDriver reads -c: "" (peers given with --join), "local" or
// "local:DIR". It returns the local registry dir, or "" for none. The
// drivers Sheepdog has and this sheep has not (corosync, zookeeper) are
// refused.
func clusterDriver(v string) (string, error) {
	switch {
	case v == "":
		return "", nil
	case v == "local":
		return defaultLocalDir, nil
	case strings.HasPrefix(v, "local:") && len(v) > len("local:"):
		return v[len("local:"):], nil
	}
	return "", usagef("Invalid cluster driver '%s': this sheep has the driver local[:DIR] (sheeps on one host find each other) "+
		"and, without -c, its own (raft and gossip, peers given with --join); corosync and zookeeper are not supported", v)
}

// localRegistry is -c local's host-local registry: a directory with one
// file per running sheep, named by its protocol address and holding
// "PID ADDR GOSSIPADDR". A sheep registers itself before it starts its cluster
// driver and takes the live entries it finds as its join seeds; its file
// is removed when it stops, and a file whose pid is gone is removed by the
// next sheep that reads the registry.
//
// Invariant: registration (read the others, write this sheep's file) runs
// under an exclusive flock of DIR/lock, so of sheeps starting together
// exactly one finds nobody and bootstraps the cluster; the others join it.
type localRegistry struct {
	path string // this sheep's file
}

// registerLocal registers the sheep at addr (its protocol address) with
// its gossip address in dir, and returns the protocol and the gossip
// addresses of the other live sheeps there.
func registerLocal(dir, addr, gossip string) (*localRegistry, []string, []string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, nil, fmt.Errorf("local cluster registry: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("local cluster registry: %w", err)
	}
	defer lock.Close() // closing releases the flock
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX); err != nil {
		return nil, nil, nil, fmt.Errorf("lock local cluster registry: %w", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("local cluster registry: %w", err)
	}
	self := "sheep-" + addr
	var peers, seeds []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, "sheep-") || name == self {
			continue
		}
		p := filepath.Join(dir, name)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) != 3 {
			os.Remove(p) // not ours to read
			continue
		}
		pid, err := strconv.Atoi(f[0])
		if err != nil || !alive(pid) {
			os.Remove(p) // its sheep is gone
			continue
		}
		peers, seeds = append(peers, f[1]), append(seeds, f[2])
	}
	r := &localRegistry{path: filepath.Join(dir, self)}
	if err := os.WriteFile(r.path, []byte(strconv.Itoa(os.Getpid())+" "+addr+" "+gossip+"\n"), 0o644); err != nil {
		return nil, nil, nil, fmt.Errorf("local cluster registry: %w", err)
	}
	return r, peers, seeds, nil
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Remove takes this sheep out of the registry (at exit).
func (r *localRegistry) Remove() {
	if r != nil {
		os.Remove(r.path)
	}
}

// writePidFile writes this process's pid to path, as Sheepdog's -P does.
func writePidFile(path string) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("failed to pid file '%s' - %w", path, err)
	}
	return nil
}
