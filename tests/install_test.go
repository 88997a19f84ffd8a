package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestInstall runs `make install DESTDIR=...` and has systemd-analyze
// verify the installed units, with the installed binaries standing in for
// PREFIX/bin (bind-mounted in a private mount namespace, so the host is
// not touched).
func TestInstall(t *testing.T) {
	if os.Geteuid() != 0 {
		skipUnlessRequired(t, "verifying the installed units needs root (a private mount namespace)")
	}
	needTools(t, "make", "systemd-analyze", "unshare")
	dest := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "install", "DESTDIR="+dest, "PREFIX=/usr/local", "BIN="+binDir)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, f := range []string{"usr/local/bin/sheep", "usr/local/bin/collie", "usr/local/bin/sheepfs"} {
		st, err := os.Stat(filepath.Join(dest, f))
		if err != nil || st.Mode()&0o111 == 0 {
			t.Fatalf("%s not installed as an executable: %v", f, err)
		}
	}
	units := filepath.Join(dest, "lib/systemd/system")
	inst := t.TempDir()
	for tmpl, instance := range map[string]string{"sheep@.service": "sheep@var-lib-sheep.service", "sheepfs@.service": "sheepfs@mnt-sheep.service"} {
		b, err := os.ReadFile(filepath.Join(units, tmpl))
		if err != nil {
			t.Fatalf("unit %s not installed: %v", tmpl, err)
		}
		if strings.Contains(string(b), "@BINDIR@") || !strings.Contains(string(b), "ExecStart=/usr/local/bin/") {
			t.Fatalf("%s: ExecStart does not name the installed binary:\n%s", tmpl, b)
		}
		// A template is verified through an instance of it.
		if err := os.Symlink(filepath.Join(units, tmpl), filepath.Join(inst, instance)); err != nil {
			t.Fatal(err)
		}
	}
	script := "mount --bind " + filepath.Join(dest, "usr/local/bin") + " /usr/local/bin && systemd-analyze verify " +
		filepath.Join(inst, "sheep@var-lib-sheep.service") + " " + filepath.Join(inst, "sheepfs@mnt-sheep.service")
	out, err := exec.Command("unshare", "-m", "sh", "-c", script).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) != 0 {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
}
