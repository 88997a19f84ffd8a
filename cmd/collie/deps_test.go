package main

import (
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// TestCollieDependencies: the CLI is a client of the wire protocol and
// links nothing of the daemon. Its only packages of ours are the wire
// vocabulary, the client and the pure libraries over them; no raft, no
// gossip, no raft log, no object store.
func TestCollieDependencies(t *testing.T) {
	goCmd, err := exec.LookPath("go")
	if err != nil {
		goCmd = filepath.Join(runtime.GOROOT(), "bin", "go")
	}
	out, err := exec.Command(goCmd, "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	const module = "github.com/sheepdog-go/sheepdog/"
	ours := map[string]bool{
		"cmd/collie":      true,
		"core/proto":      true,
		"core/client":     true,
		"core/placement":  true, // pure: oid + node list → nodes
		"core/volume":     true, // pure over an object interface
		"internal/fanout": true,
		"core/erasure":    true, // pure: parity for vdi check
	}
	forbidden := []string{
		"github.com/hashicorp/raft",
		"github.com/hashicorp/memberlist",
		"github.com/hashicorp/raft-wal",
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) < 10 {
		t.Fatalf("go list -deps gave only %q", pkgs)
	}
	seen := 0
	for _, p := range pkgs {
		if rel, ok := strings.CutPrefix(p, module); ok {
			seen++
			if !ours[rel] {
				t.Errorf("collie depends on %s", p)
			}
			continue
		}
		for _, f := range forbidden {
			if p == f || strings.HasPrefix(p, f+"/") {
				t.Errorf("collie depends on %s", p)
			}
		}
	}
	if seen < 3 {
		t.Fatalf("found only %d packages of ours in %q", seen, pkgs)
	}
}
