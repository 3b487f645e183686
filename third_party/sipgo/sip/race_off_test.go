//go:build !race

package sip

// raceEnabled: the tests run under the race detector, which changes what
// escapes to the heap: allocation counts are not checked then.
const raceEnabled = false
