// Package daemon detaches a program into the background the way Sheepdog's
// daemons do: the parent re-executes itself in a new session and returns
// only once the child says it is ready, or prints the child's error and
// fails. sheep and sheepfs share it.
package daemon

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// envChild marks the re-executed child; readyFD is where it reports.
const (
	envChild = "SHEEPDOG_DAEMON_CHILD"
	readyFD  = 3
)

// IsChild reports whether this process is the detached child.
func IsChild() bool { return os.Getenv(envChild) != "" }

// Detach re-executes the program with the same arguments (argv[0] too) in a new session
// and waits until the child calls Ready. If the child exits first, its
// stderr is printed and the process exits 1; what is the thing the child
// failed to reach ("serving", "mounted") for the fallback message.
func Detach(what string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	rd, wr, err := os.Pipe()
	if err != nil {
		return err
	}
	cmd := exec.Command(exe, os.Args[1:]...)
	// The child keeps the command line it was started with, argv[0]
	// included, as a forked daemon does: scripts find a sheep by it
	// (Sheepdog's suite: pgrep -f "$SHEEP_PROG $STORE/0 ").
	cmd.Args[0] = os.Args[0]
	cmd.Env = append(os.Environ(), envChild+"=1")
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
	return fmt.Errorf("daemon exited before %s", what)
}

// Ready tells a waiting parent the child is up, then points stdin, stdout
// and stderr at /dev/null (the parent stops reading them). It does nothing
// in a process that was not detached.
func Ready() {
	if !IsChild() {
		return
	}
	f := os.NewFile(readyFD, "ready")
	f.Write([]byte("ready\n"))
	f.Close()
	if null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		unix.Dup2(int(null.Fd()), 0)
		unix.Dup2(int(null.Fd()), 1)
		unix.Dup2(int(null.Fd()), 2)
	}
}
