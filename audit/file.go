package audit

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
)

// tailWindow is how much of a file's end is read to find its last record.
const tailWindow = 256 << 10

// fileWriter appends to a file, rotating it by size.
type fileWriter struct {
	path    string
	f       *os.File
	size    int64
	maxSize atomic.Int64
	keep    atomic.Int64
	dirty   bool // written since the last fsync
}

// openFile opens path for appending and finds where its chain stands: the
// seq and hash of the last record of path, or of path.1 when path is empty
// or missing (zero and the zero hash for a new chain).
func openFile(path string, maxSize int64, keep int) (*fileWriter, uint64, [sha256.Size]byte, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, 0, zeroHash, fmt.Errorf("audit: file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, 0, zeroHash, fmt.Errorf("audit: file: %w", err)
	}
	fw := &fileWriter{path: path, f: f}
	fw.set(maxSize, keep)
	fail := func(err error) (*fileWriter, uint64, [sha256.Size]byte, error) {
		_ = f.Close()
		return nil, 0, zeroHash, err
	}
	seq, last, size, torn, err := lastRecord(path)
	if err != nil {
		return fail(err)
	}
	if torn {
		// A crash cut the last line: end it, so the next record starts a
		// line of its own (Verify reports the cut one).
		if _, err := f.Write([]byte("\n")); err != nil {
			return fail(fmt.Errorf("audit: file: %w", err))
		}
		size++
	}
	fw.size = size
	if seq == 0 {
		prev := path + ".1"
		if _, err := os.Stat(prev); err == nil {
			if seq, last, _, _, err = lastRecord(prev); err != nil {
				return fail(err)
			}
		}
	}
	return fw, seq, last, nil
}

// lastRecord reads the last complete, well-formed record of the file at
// path: its seq and hash (0 when there is none), the file's size, and
// whether the file ends in a cut line.
func lastRecord(path string) (seq uint64, last [sha256.Size]byte, size int64, torn bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, zeroHash, 0, false, nil
	}
	if err != nil {
		return 0, zeroHash, 0, false, fmt.Errorf("audit: file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, zeroHash, 0, false, fmt.Errorf("audit: file: %w", err)
	}
	size = st.Size()
	off := max(size-tailWindow, 0)
	buf := make([]byte, size-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return 0, zeroHash, 0, false, fmt.Errorf("audit: file: %w", err)
	}
	if len(buf) > 0 && buf[len(buf)-1] != '\n' {
		torn = true
	}
	lines := bytes.Split(buf, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if i == 0 && off > 0 {
			break // may be the end of a line that began before the window
		}
		if i == len(lines)-1 && torn || len(bytes.TrimSpace(lines[i])) == 0 {
			continue
		}
		p, err := parseLine(lines[i])
		if err != nil {
			continue
		}
		return p.seq, p.hash, size, torn, nil
	}
	if size > 0 {
		return 0, zeroHash, 0, false, fmt.Errorf("audit: file %s: no audit record in its last %d bytes: not an audit log, or damaged (move it away to start a new chain)", path, len(buf))
	}
	return 0, zeroHash, size, torn, nil
}

func (fw *fileWriter) set(maxSize int64, keep int) {
	fw.maxSize.Store(maxSize)
	fw.keep.Store(int64(keep))
}

func (fw *fileWriter) write(r record) error {
	if fw.f == nil {
		if err := fw.reopen(); err != nil {
			return err
		}
	}
	if ms := fw.maxSize.Load(); ms > 0 && fw.size > 0 && fw.size+int64(len(r.line)) > ms {
		if err := fw.rotate(); err != nil {
			return err
		}
	}
	n, err := fw.f.Write(r.line)
	fw.size += int64(n)
	fw.dirty = true
	return err
}

// rotate renames path to path.1 (path.1 to path.2 …, dropping the one
// past keep) and starts a new path.
func (fw *fileWriter) rotate() error {
	if err := fw.f.Sync(); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	if err := fw.f.Close(); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	fw.f = nil
	keep := int(fw.keep.Load())
	if keep < 1 {
		keep = 1
	}
	_ = os.Remove(fmt.Sprintf("%s.%d", fw.path, keep))
	for i := keep - 1; i >= 1; i-- {
		from := fmt.Sprintf("%s.%d", fw.path, i)
		if _, err := os.Stat(from); err == nil {
			if err := os.Rename(from, fmt.Sprintf("%s.%d", fw.path, i+1)); err != nil {
				return fmt.Errorf("audit: rotate: %w", err)
			}
		}
	}
	if err := os.Rename(fw.path, fw.path+".1"); err != nil {
		return fmt.Errorf("audit: rotate: %w", err)
	}
	syncDir(filepath.Dir(fw.path))
	return fw.reopen()
}

func (fw *fileWriter) reopen() error {
	f, err := os.OpenFile(fw.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("audit: file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("audit: file: %w", err)
	}
	fw.f, fw.size = f, st.Size()
	return nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}

func (fw *fileWriter) flush() error {
	if !fw.dirty || fw.f == nil {
		return nil
	}
	fw.dirty = false
	return fw.f.Sync()
}

func (fw *fileWriter) close() error {
	if fw.f == nil {
		return nil
	}
	err := fw.flush()
	if cerr := fw.f.Close(); err == nil {
		err = cerr
	}
	fw.f = nil
	return err
}
