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
// file per running sheep, "sheep-ADDR" (its protocol address) holding
// "PID ADDR GOSSIPADDR". A sheep registers itself before it starts its cluster
// driver and takes the live entries it finds as its join seeds. When it
// stops, its file becomes "gone-ADDR"; so does a file whose pid is gone,
// at the next sheep's registration. Dead reads the registry.
//
// Invariants: registration (read the others, write this sheep's file)
// runs under an exclusive flock of DIR/lock, so of sheeps starting
// together exactly one finds nobody and bootstraps the cluster; the
// others join it. A sheep's entry says dead only after its process is
// gone (a pid that kill(pid, 0) finds no process for, or a "gone-" file
// with no live "sheep-" file for the address): a sheep that is slow or
// stuck is never reported dead.
type localRegistry struct {
	dir  string
	addr string // this sheep's protocol address
	path string // this sheep's file
}

const (
	livePrefix = "sheep-"
	gonePrefix = "gone-"
)

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
	self := livePrefix + addr
	var peers, seeds []string
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, livePrefix) || name == self {
			continue
		}
		p := filepath.Join(dir, name)
		f, ok := readEntry(p)
		if !ok {
			os.Remove(p) // not ours to read
			continue
		}
		if pid, _ := strconv.Atoi(f[0]); !alive(pid) {
			// Its sheep is gone: kept as such for Dead.
			os.Rename(p, filepath.Join(dir, gonePrefix+strings.TrimPrefix(name, livePrefix)))
			continue
		}
		peers, seeds = append(peers, f[1]), append(seeds, f[2])
	}
	r := &localRegistry{dir: dir, addr: addr, path: filepath.Join(dir, self)}
	if err := os.WriteFile(r.path, []byte(strconv.Itoa(os.Getpid())+" "+addr+" "+gossip+"\n"), 0o644); err != nil {
		return nil, nil, nil, fmt.Errorf("local cluster registry: %w", err)
	}
	os.Remove(filepath.Join(dir, gonePrefix+addr)) // this address lives again
	return r, peers, seeds, nil
}

// readEntry reads a registry file: PID ADDR GOSSIPADDR.
func readEntry(path string) ([]string, bool) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, false
	}
	f := strings.Fields(string(b))
	if len(f) != 3 {
		return nil, false
	}
	if _, err := strconv.Atoi(f[0]); err != nil {
		return nil, false
	}
	return f, true
}

// Dead reports whether the sheep at protocol address addr is known gone:
// its entry names a process that no longer exists, or it has only a
// "gone-" entry (it stopped, or a later sheep found its process gone). A
// sheep this registry never held (one joined with --join from elsewhere)
// is not known dead. (replicated.Config.Dead.)
func (r *localRegistry) Dead(addr string) bool {
	if f, ok := readEntry(filepath.Join(r.dir, livePrefix+addr)); ok {
		pid, _ := strconv.Atoi(f[0])
		return !alive(pid)
	}
	_, err := os.Stat(filepath.Join(r.dir, gonePrefix+addr))
	return err == nil
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := unix.Kill(pid, 0)
	return err == nil || errors.Is(err, unix.EPERM)
}

// Remove marks this sheep gone in the registry (at exit).
func (r *localRegistry) Remove() {
	if r != nil {
		os.Rename(r.path, filepath.Join(r.dir, gonePrefix+r.addr))
	}
}

// writePidFile writes this process's pid to path, as Sheepdog's -P does.
func writePidFile(path string) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("failed to pid file '%s' - %w", path, err)
	}
	return nil
}
