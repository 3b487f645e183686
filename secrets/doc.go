// Package secrets seals the secrets the SBC keeps at rest (private keys it
// generates, webhook secrets, the API-key pepper, carrier passwords in a
// policy) with AES-256-GCM under a master key, and opens them again.
//
// # The master key
//
// 32 random bytes, base64 (standard encoding, padded or not), from the
// environment variable SBC_MASTER_KEY or from a file (policy
// secrets.master_key_file; the file must not be readable by group or
// others). `head -c32 /dev/urandom | base64` makes one. Its key id is the
// first 8 hex digits of SHA-256("sbc-secrets key id" || key): it names the
// key in every sealed value without revealing it.
//
// During a rotation the previous key is given too (SBC_MASTER_KEY_PREVIOUS
// or secrets.previous_key_file): values sealed under either key open; new
// values are sealed under the current one.
//
// # Sealed values
//
//	sbcsec:v1:<key id>:<base64url(nonce || ciphertext || tag)>
//
// with a random 96-bit nonce and the text "sbcsec:v1:<key id>" as
// additional data, so a value cannot be moved under another key id. A
// sealed value is one line of printable ASCII: it can be pasted into a
// TOML string. Opening a value under a key that is not loaded, with the
// wrong key, or after any change to it fails with an error that says
// which.
package secrets
