// Package atomicfile replaces files so that a reader (or a crash) sees
// the old content or the new, never a part: the state files, keys and
// certificates the SBC writes.
package atomicfile

import (
	"os"
	"path/filepath"
)

// Write replaces path with data at mode perm: a temporary file in the
// same directory (created 0600, so a key is never readable by others even
// for a moment) is written, given perm, synced and renamed over path, and
// the directory is synced so the rename survives a crash. An existing
// file's mode is not kept. On error path is unchanged and the temporary
// file removed.
func Write(path string, data []byte, perm os.FileMode) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(data); err != nil {
		return err
	}
	if err = f.Chmod(perm); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(tmp, path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return nil // renamed; the directory cannot be opened to sync
	}
	defer d.Close()
	return d.Sync()
}
