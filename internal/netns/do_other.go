//go:build !linux

package netns

import (
	"errors"
	"fmt"
)

// Do runs fn in the network namespace ns. Outside Linux only the current
// namespace (ns == "") is supported.
func Do(ns string, fn func() error) error {
	if ns == "" {
		return fn()
	}
	return fmt.Errorf("netns: %s: %w", ns, errors.ErrUnsupported)
}
