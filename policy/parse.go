package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// MaxFileSize is the largest policy file Parse and Load accept (4 MiB).
const MaxFileSize = 4 << 20

// EmbeddedSource is the Source of the policy returned by Default.
const EmbeddedSource = "<embedded>"

//go:embed sbc.example.toml
var exampleTOML []byte

// DefaultTOML returns a copy of the embedded example policy file
// (sbc.example.toml), the policy Default parses.
func DefaultTOML() []byte { return bytes.Clone(exampleTOML) }

// Default returns the embedded example policy, parsed and validated. Each
// call returns a new *Policy. It panics if the embedded file is invalid,
// which a test rules out.
func Default() *Policy {
	p, err := Parse(EmbeddedSource, exampleTOML)
	if err != nil {
		panic("policy: embedded sbc.example.toml is invalid:\n" + err.Error())
	}
	return p
}

// Load reads and parses the policy file at path. Problems in the file are
// reported as Errors naming path; a file that cannot be read gives the
// underlying *os.PathError (or an error saying it is too large).
func Load(path string) (*Policy, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("policy: read %s: %w", path, err)
	}
	p, err := Parse(path, data)
	if err != nil {
		return nil, err
	}
	p.resolveFiles(filepath.Dir(path))
	return p, nil
}

// resolveFiles makes the relative file names of the policy (certificates,
// keys, CA bundles, the admin API's key store, the audit and CDR files,
// the master keys) relative to dir, the policy file's directory, so that
// a policy and its certificates can move together whatever the working
// directory of the process.
func (p *Policy) resolveFiles(dir string) {
	abs := func(f *string) {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	each := func(t *TLS) {
		if t != nil {
			abs(&t.CertFile)
			abs(&t.KeyFile)
			abs(&t.CAFile)
		}
	}
	for i := range p.Realms {
		for j := range p.Realms[i].Listeners {
			each(p.Realms[i].Listeners[j].TLS)
		}
	}
	for i := range p.Pools {
		each(p.Pools[i].TLS)
	}
	each(p.Admin.TLS)
	abs(&p.Audit.File)
	abs(&p.CDR.File)
	abs(&p.Secrets.MasterKeyFile)
	abs(&p.Secrets.PreviousKeyFile)
	if p.Admin.KeysFile != "" {
		abs(&p.Admin.KeysFile)
		p.Admin.KeysPath = p.Admin.KeysFile
	}
}

// Parse decodes and validates a policy file. name is used in error messages
// and stored as Policy.Source. The decoding is strict: unknown keys and
// values of the wrong type are errors. On success the returned policy has
// its defaults applied and its derived (toml:"-") fields filled in; it must
// not be modified afterwards. On failure the error is an Errors value
// listing every problem found, each as FILE:LINE:COL: message.
func Parse(name string, data []byte) (*Policy, error) {
	if name == "" {
		name = "<policy>"
	}
	if len(data) > MaxFileSize {
		return nil, Errors{{File: name, Line: 1, Col: 1,
			Msg: fmt.Sprintf("file is larger than %d bytes", MaxFileSize)}}
	}
	ix := newIndex(name, data)
	ix.build()
	if ix.syntax {
		return nil, ix.sorted()
	}

	p := new(Policy)
	dec := toml.NewDecoder(bytes.NewReader(ix.sanitized()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(p); err != nil {
		ix.mergeDecodeError(err)
		return nil, ix.sorted()
	}

	p.Source = name
	sum := sha256.Sum256(data)
	p.Digest = hex.EncodeToString(sum[:])
	validate(p, ix)
	if len(ix.errs) > 0 {
		return nil, ix.sorted()
	}
	return p, nil
}

// mergeDecodeError adds what go-toml found and the index walk did not. The
// two word their findings differently, so a go-toml error is dropped when
// a problem is already reported on its line.
func (ix *index) mergeDecodeError(err error) {
	reported := make(map[int]bool, len(ix.errs))
	for _, e := range ix.errs {
		reported[e.Line] = true
	}
	addDE := func(de *toml.DecodeError) {
		line, col := de.Position()
		if reported[line] {
			return
		}
		reported[line] = true
		msg := shorten(strings.TrimPrefix(de.Error(), "toml: "))
		if k := de.Key(); len(k) > 0 {
			msg = shorten(strings.Join(k, ".")) + ": " + msg
		}
		ix.add(pos{max(line, 1), max(col, 1)}, "%s", msg)
	}
	var se *toml.StrictMissingError
	var de *toml.DecodeError
	switch {
	case errors.As(err, &se):
		for i := range se.Errors {
			addDE(&se.Errors[i])
		}
	case errors.As(err, &de):
		addDE(de)
	default:
		if len(ix.errs) == 0 {
			ix.add(pos{1, 1}, "%s", shorten(strings.TrimPrefix(err.Error(), "toml: ")))
		}
	}
}

// MaxErrors is the number of problems reported for one file; beyond it the
// last Error says how many more there are.
const MaxErrors = 100

// sorted returns the errors ordered by position (stable for equal ones),
// at most MaxErrors of them.
func (ix *index) sorted() Errors {
	es := ix.errs
	sort.SliceStable(es, func(i, j int) bool {
		if es[i].Line != es[j].Line {
			return es[i].Line < es[j].Line
		}
		return es[i].Col < es[j].Col
	})
	if len(es) > MaxErrors {
		more := len(es) - (MaxErrors - 1)
		es[MaxErrors-1].Msg = fmt.Sprintf("too many errors: %d more not shown", more)
		es = es[:MaxErrors]
	}
	return es
}
