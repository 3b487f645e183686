package audit

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// maxLine bounds a record line when verifying.
const maxLine = 1 << 20

// VerifyError is the first break of a chain: where and what.
type VerifyError struct {
	File    string
	Line    int    // 1-based
	Seq     uint64 // the record's seq, when it could be read
	Problem string
}

func (e *VerifyError) Error() string {
	if e.Seq > 0 {
		return fmt.Sprintf("%s:%d: record seq %d: %s", e.File, e.Line, e.Seq, e.Problem)
	}
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Problem)
}

// VerifyResult summarises a chain that verified.
type VerifyResult struct {
	Records  int
	FirstSeq uint64
	LastSeq  uint64
	LastHash string
	// Anchored: the chain starts at seq 1 with the zero prev. When false,
	// the first file given starts mid-chain (a rotated file whose
	// predecessors were not given, or whose beginning was removed: that
	// cannot be told from the files alone).
	Anchored bool
}

// Verify walks the chain through files, given oldest first (FILE.2,
// FILE.1, FILE). It returns a *VerifyError at the first record that was
// edited (its hash does not match), removed or reordered (its prev is not
// the previous record's hash, or its seq does not follow), or cannot be
// read.
func Verify(files ...string) (VerifyResult, error) {
	v := verifier{}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return v.res, err
		}
		err = v.file(name, f)
		_ = f.Close()
		if err != nil {
			return v.res, err
		}
	}
	return v.res, nil
}

// VerifyReader verifies one stream of records (name is for errors).
func VerifyReader(name string, r io.Reader) (VerifyResult, error) {
	v := verifier{}
	err := v.file(name, r)
	return v.res, err
}

type verifier struct {
	res  VerifyResult
	have bool
	seq  uint64
	prev [sha256.Size]byte
}

func (v *verifier) file(name string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 {
			return &VerifyError{File: name, Line: n, Problem: "empty line (a record cut by a crash, or removed text)"}
		}
		p, err := parseLine(line)
		if err != nil {
			return &VerifyError{File: name, Line: n, Problem: "unreadable record: " + err.Error()}
		}
		if got := chainHash(p.prev, p.canonical); got != p.hash {
			return &VerifyError{File: name, Line: n, Seq: p.seq, Problem: "edited: its hash does not match its content"}
		}
		if !v.have {
			v.res.FirstSeq = p.seq
			v.res.Anchored = p.seq == 1 && p.prev == zeroHash
			if p.seq == 1 && p.prev != zeroHash {
				return &VerifyError{File: name, Line: n, Seq: p.seq, Problem: "the first record of a chain has a non-zero prev"}
			}
		} else {
			if p.prev != v.prev {
				what := "removed or reordered records before it"
				if p.seq == v.seq+1 {
					what = "its prev is not the previous record's hash (a record before it was replaced)"
				}
				return &VerifyError{File: name, Line: n, Seq: p.seq, Problem: fmt.Sprintf("%s: prev does not match seq %d's hash; seq %d follows %d", what, v.seq, p.seq, v.seq)}
			}
			if p.seq != v.seq+1 {
				return &VerifyError{File: name, Line: n, Seq: p.seq, Problem: fmt.Sprintf("seq %d follows %d", p.seq, v.seq)}
			}
		}
		v.have, v.seq, v.prev = true, p.seq, p.hash
		v.res.Records++
		v.res.LastSeq = p.seq
		v.res.LastHash = hex.EncodeToString(p.hash[:])
	}
	if err := sc.Err(); err != nil {
		return &VerifyError{File: name, Line: n + 1, Problem: err.Error()}
	}
	return nil
}
