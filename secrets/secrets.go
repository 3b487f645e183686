package secrets

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"os"
	"regexp"
	"strings"
)

// Environment variables that hold master keys.
const (
	EnvKey         = "SBC_MASTER_KEY"
	EnvPreviousKey = "SBC_MASTER_KEY_PREVIOUS"
)

// Prefix starts every sealed value.
const Prefix = "sbcsec:v1:"

// Errors of Open; match them with errors.Is.
var (
	// ErrNoKey: no master key is configured, or none with the value's key id.
	ErrNoKey = errors.New("secrets: no master key with this key id")
	// ErrTampered: the value does not authenticate under its key (changed,
	// or sealed under another key that happens to share the id).
	ErrTampered = errors.New("secrets: sealed value does not authenticate (tampered, or the wrong master key)")
	// ErrFormat: not a sealed value.
	ErrFormat = errors.New("secrets: not a sealed value")
)

// Key is a master key.
type Key struct {
	id   string
	aead cipher.AEAD
}

// ID is the key's id (8 hex digits).
func (k *Key) ID() string { return k.id }

// NewKey makes a Key of 32 bytes.
func NewKey(raw []byte) (*Key, error) {
	if len(raw) != 32 {
		return nil, fmt.Errorf("a master key is 32 bytes, got %d", len(raw))
	}
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(append([]byte("sbc-secrets key id"), raw...))
	return &Key{id: hex.EncodeToString(sum[:4]), aead: aead}, nil
}

// ParseKey decodes a base64 master key (standard or URL alphabet, padded
// or not; surrounding white space ignored).
func ParseKey(s string) (*Key, error) {
	s = strings.TrimSpace(s)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if raw, err := enc.DecodeString(s); err == nil {
			return NewKey(raw)
		}
	}
	return nil, errors.New("a master key is 32 bytes in base64 (make one with: sbc secrets genkey, or head -c32 /dev/urandom | base64)")
}

// GenerateKey returns a new random key, base64.
func GenerateKey() string {
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	return base64.StdEncoding.EncodeToString(raw[:])
}

// ReadKeyFile reads a base64 master key from a file that only its owner
// may read.
func ReadKeyFile(path string) (*Key, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets: master key file %s is readable by group or others (mode %v): chmod 600 it", path, st.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file: %w", err)
	}
	k, err := ParseKey(string(b))
	if err != nil {
		return nil, fmt.Errorf("secrets: master key file %s: %w", path, err)
	}
	return k, nil
}

// Keyring is the current master key and, during a rotation, previous
// ones. A nil *Keyring has no key: Seal fails, Open fails on every
// sealed value and Reveal passes plain values through.
type Keyring struct {
	current *Key
	all     map[string]*Key
}

// NewKeyring makes a Keyring sealing under current and opening under
// current and previous.
func NewKeyring(current *Key, previous ...*Key) *Keyring {
	r := &Keyring{current: current, all: map[string]*Key{current.id: current}}
	for _, k := range previous {
		if k != nil {
			if _, dup := r.all[k.id]; !dup {
				r.all[k.id] = k
			}
		}
	}
	return r
}

// Sources name where LoadKeyring finds the keys.
type Sources struct {
	// KeyFile and PreviousKeyFile are files (policy secrets.master_key_file,
	// secrets.previous_key_file); the environment variables EnvKey and
	// EnvPreviousKey are read when these are empty.
	KeyFile, PreviousKeyFile string
	// Getenv reads the environment (os.Getenv when nil).
	Getenv func(string) string
}

// LoadKeyring loads the master key (and a previous one) from files or the
// environment. It returns nil, nil when no key is configured at all; a
// key that is configured but unusable is an error.
func LoadKeyring(src Sources) (*Keyring, error) {
	getenv := src.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	load := func(file, env string) (*Key, error) {
		if file != "" {
			return ReadKeyFile(file)
		}
		if v := getenv(env); v != "" {
			k, err := ParseKey(v)
			if err != nil {
				return nil, fmt.Errorf("secrets: %s: %w", env, err)
			}
			return k, nil
		}
		return nil, nil
	}
	cur, err := load(src.KeyFile, EnvKey)
	if err != nil {
		return nil, err
	}
	prev, err := load(src.PreviousKeyFile, EnvPreviousKey)
	if err != nil {
		return nil, err
	}
	if cur == nil {
		if prev != nil {
			return nil, fmt.Errorf("secrets: a previous master key without a current one (set %s or secrets.master_key_file)", EnvKey)
		}
		return nil, nil
	}
	return NewKeyring(cur, prev), nil
}

// CurrentID is the id of the key Seal uses ("" for a nil Keyring).
func (r *Keyring) CurrentID() string {
	if r == nil {
		return ""
	}
	return r.current.id
}

// Seal encrypts plain under the current key.
func (r *Keyring) Seal(plain []byte) (string, error) {
	if r == nil {
		return "", fmt.Errorf("secrets: cannot seal: no master key (set %s or secrets.master_key_file)", EnvKey)
	}
	k := r.current
	ad := Prefix + k.id
	nonce := make([]byte, k.aead.NonceSize(), k.aead.NonceSize()+len(plain)+k.aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	ct := k.aead.Seal(nonce, nonce, plain, []byte(ad))
	return ad + ":" + base64.RawURLEncoding.EncodeToString(ct), nil
}

// IsSealed reports whether s has the form of a sealed value.
func IsSealed(s string) bool { return strings.HasPrefix(s, Prefix) }

// KeyID returns the key id a sealed value names.
func KeyID(sealed string) (string, error) {
	rest, ok := strings.CutPrefix(sealed, Prefix)
	if !ok {
		return "", ErrFormat
	}
	id, _, ok := strings.Cut(rest, ":")
	if !ok || len(id) != 8 {
		return "", fmt.Errorf("%w: no key id", ErrFormat)
	}
	return id, nil
}

// Open decrypts a sealed value.
func (r *Keyring) Open(sealed string) ([]byte, error) {
	id, err := KeyID(sealed)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("%w %s: no master key is configured (set %s or secrets.master_key_file)", ErrNoKey, id, EnvKey)
	}
	k, ok := r.all[id]
	if !ok {
		return nil, fmt.Errorf("%w %s (loaded: %s): the value was sealed under another master key; during a rotation give the old one as %s or secrets.previous_key_file", ErrNoKey, id, r.ids(), EnvPreviousKey)
	}
	ct, err := base64.RawURLEncoding.DecodeString(sealed[len(Prefix)+len(id)+1:])
	if err != nil || len(ct) < k.aead.NonceSize()+k.aead.Overhead() {
		return nil, fmt.Errorf("%w: bad ciphertext", ErrTampered)
	}
	ns := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, ct[:ns], ct[ns:], []byte(Prefix+id))
	if err != nil {
		return nil, fmt.Errorf("%w (key id %s)", ErrTampered, id)
	}
	return plain, nil
}

func (r *Keyring) ids() string {
	var ids []string
	for id := range r.all {
		ids = append(ids, id)
	}
	return strings.Join(ids, ", ")
}

// Reveal returns s itself when it is not sealed, else what it seals: for
// settings that may be given in clear or sealed.
func (r *Keyring) Reveal(s string) (string, error) {
	if !IsSealed(s) {
		return s, nil
	}
	b, err := r.Open(s)
	return string(b), err
}

// sealedRE finds sealed values in text.
var sealedRE = regexp.MustCompile(`sbcsec:v1:[0-9a-f]{8}:[A-Za-z0-9_-]+`)

// Reseal re-encrypts every sealed value in text under the current key
// (values already under it are left as they are) and returns the new
// text and how many values changed. Nothing else of text changes.
func (r *Keyring) Reseal(text []byte) ([]byte, int, error) {
	if r == nil {
		return nil, 0, fmt.Errorf("secrets: cannot reseal: no master key (set %s)", EnvKey)
	}
	var firstErr error
	n := 0
	out := sealedRE.ReplaceAllFunc(text, func(v []byte) []byte {
		if firstErr != nil {
			return v
		}
		if id, _ := KeyID(string(v)); id == r.current.id {
			return v
		}
		plain, err := r.Open(string(v))
		if err != nil {
			firstErr = err
			return v
		}
		s, err := r.Seal(plain)
		if err != nil {
			firstErr = err
			return v
		}
		n++
		return []byte(s)
	})
	if firstErr != nil {
		return nil, 0, firstErr
	}
	return out, n, nil
}

// ResealFile reseals the values in the file at path in place: the new
// text is written to a temporary file in the same directory, synced and
// renamed over path (keeping its mode), so a reader sees the old file or
// the new one, never a mix.
func (r *Keyring) ResealFile(path string) (int, error) {
	st, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	out, n, err := r.Reseal(text)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", path, err)
	}
	if n == 0 {
		return 0, nil
	}
	return n, atomicfile.Write(path, out, st.Mode().Perm())
}
