//go:build linux

package netns

import (
	"errors"
	"fmt"
	"os"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread switched into the network namespace ns (a
// name made by `ip netns add`, or a path such as /proc/PID/ns/net; see
// [Path]) and returns fn's error. Sockets and interface lookups made by fn
// belong to that namespace; sockets stay there after fn returns and may be
// used from any goroutine. fn must not start goroutines that depend on the
// namespace: they run on other threads. An empty ns runs fn on the calling
// goroutine, in the current namespace. Switching needs CAP_SYS_ADMIN.
//
// If the thread cannot be switched back it is left locked, so that the
// runtime ends it instead of reusing it in the wrong namespace, and the
// failure is joined to fn's error. A panic or runtime.Goexit (t.FailNow)
// in fn is carried over to the caller's goroutine once the thread has
// been switched back.
func Do(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	target, err := os.Open(Path(ns))
	if err != nil {
		return fmt.Errorf("netns: %w", err)
	}
	defer target.Close()

	type result struct {
		err      error
		panicked bool
		panicVal any
		goexit   bool
	}
	done := make(chan result, 1)
	go func() {
		var res result
		defer func() { done <- res }() // last: after the thread was handled
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: %w", err)
			return
		}
		defer orig.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("netns: setns %s: %w", ns, err)
			return
		}
		returned := false
		defer func() {
			if !returned {
				// recover is nil under runtime.Goexit; panic(nil)
				// recovers as a *runtime.PanicNilError.
				if r := recover(); r != nil {
					res.panicked, res.panicVal = true, r
				} else {
					res.goexit = true
				}
			}
			if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
				// The thread stays locked and dies with this goroutine.
				res.err = errors.Join(res.err, fmt.Errorf("netns: setns back from %s: %w", ns, err))
				return
			}
			runtime.UnlockOSThread()
		}()
		res.err = fn()
		returned = true
	}()
	res := <-done
	switch {
	case res.panicked:
		panic(res.panicVal)
	case res.goexit:
		runtime.Goexit()
	}
	return res.err
}
