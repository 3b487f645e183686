package sbc

import (
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// residentPages reports how many of the whole pages inside b are
// resident (mincore(2)), out of how many; known is false where that
// cannot be told.
func residentPages(b []byte) (resident, pages int, known bool) {
	ps := os.Getpagesize()
	if off := int(uintptr(unsafe.Pointer(unsafe.SliceData(b))) % uintptr(ps)); off != 0 {
		if len(b) < ps-off {
			return 0, 0, false
		}
		b = b[ps-off:]
	}
	pages = len(b) / ps
	if pages == 0 {
		return 0, 0, false
	}
	vec := make([]byte, pages)
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(pages*ps),
		uintptr(unsafe.Pointer(unsafe.SliceData(vec))))
	if errno != 0 {
		return 0, pages, false
	}
	for _, v := range vec {
		if v&1 != 0 {
			resident++
		}
	}
	return resident, pages, true
}
