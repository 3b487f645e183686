package sbc

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/sbc-project/sbc/policy"
)

// API keys of the admin API. A key is "sbc_<id>_<secret>": id is 16 hex
// digits (8 random bytes), secret 43 base64url characters (32 random
// bytes). The SBC stores only the id, the roles and the SHA-256 of the
// whole key: a key has 256 bits of entropy, so a fast hash is enough (no
// slow KDF, which would let a client cost the server memory per request).
// Hashes are compared in constant time. A key is shown once, when made.

const (
	keyPrefix    = "sbc_"
	keySecretLen = 43 // base64url (no padding) of 32 bytes
)

// StoredKey is one API key in a key store file: never the key itself.
type StoredKey struct {
	ID      string    `json:"id"`
	SHA256  string    `json:"sha256"`
	Roles   []string  `json:"roles"`
	Name    string    `json:"name,omitempty"`
	Created time.Time `json:"created"`
}

// keyFile is the key store's JSON.
type keyFile struct {
	Keys []StoredKey `json:"keys"`
}

// NewAPIKey makes a random API key. It returns the key (to show once)
// and what is stored of it.
func NewAPIKey(roles []string, name string) (key string, sk StoredKey, err error) {
	for _, r := range roles {
		if !policy.ValidRole(r) {
			return "", sk, fmt.Errorf("unknown role %q (want one of %s)", r, strings.Join(policy.AdminRoles, ", "))
		}
	}
	if len(roles) == 0 {
		return "", sk, errors.New("a key needs at least one role")
	}
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return "", sk, err
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return "", sk, err
	}
	key = keyPrefix + hex.EncodeToString(id[:]) + "_" + base64.RawURLEncoding.EncodeToString(secret[:])
	return key, StoredKey{ID: hex.EncodeToString(id[:]), SHA256: HashAPIKey(key), Roles: slices.Clone(roles), Name: name,
		Created: time.Now().UTC().Truncate(time.Second)}, nil
}

// HashAPIKey is the lowercase hex SHA-256 of a whole key, as stored.
func HashAPIKey(key string) string {
	s := sha256.Sum256([]byte(key))
	return hex.EncodeToString(s[:])
}

// parseAPIKey splits a key into its id, or says it is not one.
func parseAPIKey(key string) (id string, ok bool) {
	rest, found := strings.CutPrefix(key, keyPrefix)
	if !found || len(rest) != 16+1+keySecretLen || rest[16] != '_' {
		return "", false
	}
	id = rest[:16]
	if !policy.ValidKeyID(id) {
		return "", false
	}
	for _, c := range rest[17:] {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return "", false
		}
	}
	return id, true
}

// ReadKeyFile reads a key store; a missing file holds no key.
func ReadKeyFile(path string) ([]StoredKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var kf keyFile
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, k := range kf.Keys {
		hb, err := hex.DecodeString(k.SHA256)
		if !policy.ValidKeyID(k.ID) || err != nil || len(hb) != 32 {
			return nil, fmt.Errorf("%s: key %q: bad id or hash", path, k.ID)
		}
		for _, r := range k.Roles {
			if !policy.ValidRole(r) {
				return nil, fmt.Errorf("%s: key %s: unknown role %q", path, k.ID, r)
			}
		}
	}
	return kf.Keys, nil
}

// keyFileMu serialises changes of key stores by this process.
var keyFileMu sync.Mutex

// UpdateKeyFile rewrites a key store with what change makes of its keys:
// written to a temporary file (mode 0600) and renamed over the old one,
// so the SBC reading it sees the old or the new store, never half of one.
func UpdateKeyFile(path string, change func([]StoredKey) ([]StoredKey, error)) error {
	keyFileMu.Lock()
	defer keyFileMu.Unlock()
	keys, err := ReadKeyFile(path)
	if err != nil {
		return err
	}
	if keys, err = change(keys); err != nil {
		return err
	}
	b, err := json.MarshalIndent(keyFile{Keys: keys}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return err
	}
	return atomicfile.Write(path, append(b, '\n'), 0o600)
}

// keyStore is the key store file as the SBC reads it: re-read when its
// size or modification time changed, checked at most once a second.
type keyStore struct {
	mu      sync.Mutex
	path    string
	checked time.Time
	mod     time.Time
	size    int64
	keys    map[string]StoredKey
	err     error // the last read's problem (the previous keys stay)
}

// lookup finds a key by id in the file at path, re-reading it if needed.
// A file that cannot be read keeps the keys last read from it.
func (ks *keyStore) lookup(path, id string, now time.Time) (StoredKey, bool, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	if path != ks.path {
		ks.path, ks.checked, ks.mod, ks.size, ks.keys, ks.err = path, time.Time{}, time.Time{}, 0, nil, nil
	}
	if path == "" {
		return StoredKey{}, false, nil
	}
	if now.Sub(ks.checked) >= time.Second || ks.keys == nil {
		ks.checked = now
		fi, err := os.Stat(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			ks.keys, ks.err, ks.mod, ks.size = map[string]StoredKey{}, nil, time.Time{}, -1
		case err != nil:
			ks.err = err
		case !fi.ModTime().Equal(ks.mod) || fi.Size() != ks.size || ks.keys == nil:
			keys, err := ReadKeyFile(path)
			if err != nil {
				ks.err = err
				break
			}
			ks.err, ks.mod, ks.size = nil, fi.ModTime(), fi.Size()
			ks.keys = make(map[string]StoredKey, len(keys))
			for _, k := range keys {
				ks.keys[k.ID] = k
			}
		}
	}
	k, ok := ks.keys[id]
	return k, ok, ks.err
}

// hashEqual compares two hex hashes in constant time.
func hashEqual(a, b string) bool {
	return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}
