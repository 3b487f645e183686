// Package secrets seals the secrets the SBC keeps at rest (the DTLS
// private key it generates in state_dir, and the secrets of a policy:
// carrier digest passwords, webhook secrets, the HEP password) with
// AES-256-GCM under a master key, and opens them again.
//
// Admin API keys are not among them, and there is no pepper: the SBC
// stores only the SHA-256 of each key (sbc/adminkeys.go), and a key
// carries 256 random bits. A pepper (a secret mixed into the hashes and
// kept apart from them) protects secrets of low entropy, such as
// passwords, from offline guessing once the hash file is stolen; a
// 256-bit random key cannot be guessed from its hash whatever the hash
// file's fate, so a pepper would add a secret to keep and rotate for no
// gain.
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
// values are sealed under the current one. Keyring.ResealFile re-seals
// the values of a file (sbc secrets rotate); the SBC does it itself for
// its DTLS key in state_dir when it starts or reloads with both keys.
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
