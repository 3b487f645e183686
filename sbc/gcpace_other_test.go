//go:build !linux

package sbc

// residentPages cannot tell here.
func residentPages(b []byte) (resident, pages int, known bool) { return 0, 0, false }
