//go:build race

package sbc

// raceEnabled: the tests run under the race detector (slower: floods are
// scaled down).
const raceEnabled = true
