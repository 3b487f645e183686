//go:build !linux

package srtp

// testModes are the pools' socket modes of this system.
var testModes = []sockMode{modeNet}
