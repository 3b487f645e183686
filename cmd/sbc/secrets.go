package main

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/secrets"
)

// stdin is what `sbc secrets seal` reads (tests replace it).
var stdin io.Reader = os.Stdin

// maxSecret bounds a value given to `sbc secrets seal`.
const maxSecret = 1 << 20

const secretsUsage = `usage:
  sbc secrets genkey
      print a new master key (32 random bytes, base64)
  sbc secrets seal [-config FILE | -key-file F]
      read a value on stdin (one trailing newline dropped) and print it
      sealed under the master key ("sbcsec:v1:…"), to paste into a policy
  sbc secrets rotate [-config FILE | -key-file NEW -previous-key-file OLD] FILE...
      re-seal every sealed value in each FILE under the (new) master key;
      values under the previous key need it. Each FILE is replaced
      atomically; other text is left as it is. The SBC re-seals the DTLS
      key of its state_dir itself, at a start or reload with both keys
      (docs/OPERATOR.md: rotating the master key).

The master key comes from -key-file, else the policy's [secrets]
master_key_file (-config), else the environment variable SBC_MASTER_KEY;
the previous one from -previous-key-file, previous_key_file or
SBC_MASTER_KEY_PREVIOUS.
`

func cmdSecrets(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, secretsUsage)
		return 2
	}
	switch args[0] {
	case "genkey":
		fmt.Fprintln(stdout, secrets.GenerateKey())
		return 0
	case "seal", "rotate":
	default:
		fmt.Fprint(stderr, secretsUsage)
		return 2
	}
	fs := newFlags("secrets "+args[0], stderr)
	fs.Usage = func() { fmt.Fprint(stderr, secretsUsage) }
	cfg := fs.String("config", "", "policy file whose [secrets] names the key files")
	keyFile := fs.String("key-file", "", "the master key file")
	prevFile := fs.String("previous-key-file", "", "the previous master key file (rotate)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	r, err := keyringFor(*cfg, *keyFile, *prevFile)
	if err != nil {
		fmt.Fprintf(stderr, "sbc secrets %s: %v\n", args[0], err)
		return 1
	}
	if args[0] == "seal" {
		return secretsSeal(fs, r, stdout, stderr)
	}
	return secretsRotate(fs, r, stdout, stderr)
}

// keyringFor loads the keys the flags, the policy or the environment name.
func keyringFor(cfg, keyFile, prevFile string) (*secrets.Keyring, error) {
	src := secrets.Sources{KeyFile: keyFile, PreviousKeyFile: prevFile}
	if cfg != "" {
		p, err := policy.Load(cfg)
		if err != nil {
			return nil, err
		}
		if src.KeyFile == "" {
			src.KeyFile = p.Secrets.MasterKeyFile
		}
		if src.PreviousKeyFile == "" {
			src.PreviousKeyFile = p.Secrets.PreviousKeyFile
		}
	}
	r, err := secrets.LoadKeyring(src)
	if err != nil {
		return nil, err
	}
	if r == nil {
		return nil, fmt.Errorf("no master key: give -key-file, -config with [secrets] master_key_file, or set %s", secrets.EnvKey)
	}
	return r, nil
}

func secretsSeal(fs *flag.FlagSet, r *secrets.Keyring, stdout, stderr io.Writer) int {
	if fs.NArg() != 0 {
		fmt.Fprintf(stderr, "sbc secrets seal: the value is read on stdin, not from %q\n", fs.Arg(0))
		return 2
	}
	v, err := io.ReadAll(io.LimitReader(stdin, maxSecret+1))
	if err != nil {
		fmt.Fprintf(stderr, "sbc secrets seal: %v\n", err)
		return 1
	}
	if len(v) > maxSecret {
		fmt.Fprintf(stderr, "sbc secrets seal: value over %d bytes\n", maxSecret)
		return 1
	}
	v = bytes.TrimSuffix(v, []byte("\n"))
	v = bytes.TrimSuffix(v, []byte("\r"))
	if len(v) == 0 {
		fmt.Fprintln(stderr, "sbc secrets seal: empty value on stdin")
		return 1
	}
	s, err := r.Seal(v)
	if err != nil {
		fmt.Fprintf(stderr, "sbc secrets seal: %v\n", err)
		return 1
	}
	fmt.Fprintln(stdout, s)
	return 0
}

func secretsRotate(fs *flag.FlagSet, r *secrets.Keyring, stdout, stderr io.Writer) int {
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, secretsUsage)
		return 2
	}
	code := 0
	for _, f := range fs.Args() {
		n, err := r.ResealFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "sbc secrets rotate: %s: %v (file unchanged)\n", f, err)
			code = 1
			continue
		}
		fmt.Fprintf(stdout, "%s: %d value(s) re-sealed under key %s\n", f, n, r.CurrentID())
	}
	return code
}
