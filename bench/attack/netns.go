package attack

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"golang.org/x/sys/unix"
)

// netnsPath turns a namespace name (as `ip netns add` makes) into its
// path; a path is returned as it is.
func netnsPath(ns string) string {
	if strings.ContainsRune(ns, '/') {
		return ns
	}
	return filepath.Join("/var/run/netns", ns)
}

// InNetNS runs fn on an OS thread switched into the network namespace ns
// (a name made by `ip netns add`, or a path such as /proc/PID/ns/net), so
// that the sockets fn opens live in that namespace; they stay there after
// fn returns and may be used from any goroutine. fn must not start
// goroutines that open sockets. An empty ns runs fn in the current
// namespace. Switching needs CAP_SYS_ADMIN.
func InNetNS(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	target, err := os.Open(netnsPath(ns))
	if err != nil {
		return fmt.Errorf("attack: netns: %w", err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("attack: netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("attack: setns %s: %w", ns, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: the runtime ends it with this
			// goroutine instead of reusing it in the wrong namespace.
			errc <- errors.Join(ferr, fmt.Errorf("attack: setns back: %w", err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
