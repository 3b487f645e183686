package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/sbc-project/sbc/audit"
)

// cmdAudit: sbc audit verify FILE...
func cmdAudit(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "verify" {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	fs := newFlags("audit verify", stderr)
	fs.Usage = func() { fmt.Fprint(stderr, auditUsage) }
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	files := fs.Args()
	if len(files) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return 2
	}
	res, err := audit.Verify(files...)
	var ve *audit.VerifyError
	switch {
	case errors.As(err, &ve):
		fmt.Fprintf(stdout, "BROKEN %v\n", ve)
		if res.Records > 0 {
			fmt.Fprintf(stdout, "the %d records before it verify (seq %d to %d)\n", res.Records, res.FirstSeq, res.LastSeq)
		}
		return 1
	case err != nil:
		fmt.Fprintf(stderr, "sbc audit verify: %v\n", err)
		return 1
	}
	start := "from the first record of the chain (seq 1)"
	if !res.Anchored {
		start = fmt.Sprintf("from seq %d: the files before it were not given (or were rotated away); records before it cannot be checked", res.FirstSeq)
	}
	fmt.Fprintf(stdout, "OK %d records, seq %d to %d, %s\nlast hash %s\n", res.Records, res.FirstSeq, res.LastSeq, start, res.LastHash)
	return 0
}

const auditUsage = `usage: sbc audit verify FILE...

Walks the hash chain of audit log files and reports the first record that
was edited, removed or reordered, with its file and line (exit 1), or how
many records verify (exit 0). Give rotated files oldest first:
  sbc audit verify audit.log.2 audit.log.1 audit.log
Records cut from the end of the newest file cannot be detected from the
file alone: compare its last hash with a copy kept elsewhere (syslog).
`
