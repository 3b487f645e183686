package validate

import (
	"bufio"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/emiago/sipgo/sip"
)

// corpusDir finds ../shared/corpora relative to the repository root (this
// package is at sbc/validate). Absent corpora skip the test, except in CI.
func corpusDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "corpora")
	if _, err := os.Stat(filepath.Join(dir, "rfc4475", "INDEX.tsv")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("torture corpora not found at %s (CI=true): %v", dir, err)
		}
		t.Skipf("torture corpora not found at %s: %v (they live next to the repository, in ../shared/corpora)", dir, err)
	}
	return dir
}

// corpusCase is the expected fate of one corpus message, written out by
// hand from INDEX.tsv and the RFCs, not derived from the code under test.
//
// Outcomes:
//
//	accept               Raw, the parser and Request/Response all pass it
//	drop:raw <why>       Raw drops it before the parser
//	drop:parse           sipgo's parser rejects it: nothing to answer, dropped
//	drop <why>           Response (or Request on an ACK) drops it
//	<code> <why>         Request answers it with that status code
//
// dgram is the fate of the bytes as a UDP datagram or WebSocket message
// (Raw runs first); stream is their fate on TCP/TLS, where Raw cannot run
// (sipgo's read filter sees chunks, not messages). note says where we
// depart from what INDEX.tsv expects, and why.
type corpusCase struct {
	file   string
	dgram  string
	stream string
	note   string
}

const (
	noteParse   = "INDEX: reject 400; sipgo cannot parse it, so there is nothing to answer: dropped and counted"
	noteRawDrop = "INDEX: reject 400; caught on the raw bytes, where no answer can be built: dropped and counted"
	noteBareLF  = "INDEX: accept; the archive file has bare-LF line endings, not SIP (RFC 3261 7: CRLF); the wire/ copy is the sendable one"
)

var corpus4475 = []corpusCase{
	// 3.1.1 valid
	{"wsinv.dat", "accept", "accept", ""},
	{"intmeth.dat", "accept", "accept", ""},
	{"esc01.dat", "accept", "accept", ""},
	{"escnull.dat", "accept", "accept", ""},
	{"esc02.dat", "accept", "accept", ""},
	{"lwsdisp.dat", "accept", "accept", ""},
	{"longreq.dat", "accept", "accept", ""},
	{"dblreq.dat", "accept", "accept", "the first REGISTER (Content-Length 0) is accepted, the trailing request ignored"},
	{"semiuri.dat", "accept", "accept", ""},
	{"transports.dat", "accept", "accept", ""},
	{"mpart01.dat", "accept", "accept", ""},
	{"unreason.dat", "accept", "accept", ""},
	{"noreason.dat", "accept", "accept", ""},
	// 3.1.2 invalid
	{"badinv01.dat", "drop:raw stray_separator", "drop:parse", noteRawDrop},
	{"clerr.dat", "drop:raw content_length_mismatch", "drop:parse", noteRawDrop + " (on a stream sipgo waits for the missing bytes)"},
	{"ncl.dat", "drop:raw bad_content_length", "drop:parse", noteRawDrop},
	{"scalar02.dat", "drop:parse", "drop:parse", noteParse + " (sipgo fails on the CSeq overflow first; Request has its own checks for each field)"},
	{"scalarlg.dat", "drop:parse", "drop:parse", ""},
	{"quotbal.dat", "drop:raw unbalanced_quote", "drop:parse", noteRawDrop},
	{"ltgtruri.dat", "drop:raw bad_start_line", "drop:parse", noteRawDrop},
	{"lwsruri.dat", "drop:raw bad_start_line", "drop:parse", noteRawDrop},
	{"lwsstart.dat", "drop:raw bad_start_line", "drop:parse", noteRawDrop},
	{"trws.dat", "drop:raw bad_start_line", "drop:parse", noteRawDrop},
	{"escruri.dat", "400 request_uri_headers", "400 request_uri_headers", ""},
	{"baddate.dat", "accept", "accept", "INDEX allows tolerating the Date; the B2BUA does not relay it"},
	{"regbadct.dat", "drop:raw unbracketed_uri", "accept", noteRawDrop + "; on a stream it is accepted: sipgo parses it exactly like the bracketed form (regescrt.dat)"},
	{"badaspec.dat", "drop:parse", "drop:parse", "INDEX: reject 400 or accept; sipgo cannot parse the spaces inside <>: dropped"},
	{"baddn.dat", "drop:raw multiple_values", "drop:parse", noteRawDrop + " (the file also lacks the empty line that ends the headers)"},
	{"badvers.dat", "505 bad_version", "505 bad_version", ""},
	{"mismatch01.dat", "400 cseq_method_mismatch", "400 cseq_method_mismatch", ""},
	{"mismatch02.dat", "400 cseq_method_mismatch", "400 cseq_method_mismatch", ""},
	{"bigcode.dat", "drop:raw bad_start_line", "drop:parse", ""},
	// 3.2, 3.3 semantic
	{"badbranch.dat", "400 via_branch_bare_cookie", "400 via_branch_bare_cookie", ""},
	{"insuf.dat", "400 missing_header_to", "400 missing_header_to", ""},
	{"unkscm.dat", "416 unsupported_scheme", "416 unsupported_scheme", ""},
	{"novelsc.dat", "drop:parse", "drop:parse", "INDEX: 416; sipgo rejects any scheme with a '.', '+', '-' or digit (soap.beep): dropped"},
	{"unksm2.dat", "400 bad_to", "400 bad_to", ""},
	{"bext01.dat", "420 bad_extension", "420 bad_extension", ""},
	{"invut.dat", "415 unsupported_media_type", "415 unsupported_media_type", ""},
	{"regaut01.dat", "accept", "accept", "INDEX: 401 challenge; authentication is not this stage's: the registrar behind us challenges"},
	{"multi01.dat", "400 dup_header_to", "400 dup_header_to", ""},
	{"mcl01.dat", "400 dup_header_content_length", "400 dup_header_content_length", ""},
	{"bcast.dat", "accept", "accept", "well-formed response; the B2BUA never routes a response by its Via, so the broadcast sent-by is harmless"},
	{"zeromf.dat", "483 max_forwards_zero", "483 max_forwards_zero", ""},
	{"cparam01.dat", "accept", "accept", ""},
	{"cparam02.dat", "accept", "accept", ""},
	{"regescrt.dat", "accept", "accept", ""},
	{"sdp01.dat", "406 not_acceptable", "406 not_acceptable", ""},
	// 3.4 backward compatibility
	{"inv2543.dat", "drop:raw missing_from_tag", "accept", "no branch cookie and no From tag: sipgo cannot key its transaction and would answer a stateless 400 itself; dropped and counted before it instead"},
	// in the archive, in no section: no request-line version
	{"test.dat", "drop:raw bad_start_line", "drop:parse", "unreferenced; not a SIP message (no SIP-Version)"},
}

var corpus5118 = []corpusCase{
	// The archive copies: bare LF, some without the final empty line.
	{"ipv6-good", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"ipv6-bad", "drop:raw bad_line_ending", "drop:parse", "bare LF; see wire/ipv6-bad.sip"},
	{"port-ambiguous", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"port-unambiguous", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"via-received-param-with-delim", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"via-received-param-no-delim", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"ipv6-in-sdp", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"mult-ip-in-header", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"mult-ip-in-sdp", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"ipv4-mapped-ipv6", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"ipv6-bug-abnf-3-colons", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	{"ipv6-correct-abnf-2-colons", "drop:raw bad_line_ending", "drop:parse", noteBareLF},
	// The sendable copies.
	{"wire/ipv6-good.sip", "accept", "accept", ""},
	{"wire/ipv6-bad.sip", "drop:raw ipv6_unbracketed", "drop:parse", noteRawDrop + "; sipgo cannot parse it either"},
	{"wire/port-ambiguous.sip", "accept", "accept", ""},
	{"wire/port-unambiguous.sip", "accept", "accept", ""},
	{"wire/via-received-param-with-delim.sip", "accept", "accept", ""},
	{"wire/via-received-param-no-delim.sip", "accept", "accept", ""},
	{"wire/ipv6-in-sdp.sip", "accept", "accept", ""},
	{"wire/mult-ip-in-header.sip", "accept", "accept", ""},
	{"wire/mult-ip-in-sdp.sip", "accept", "accept", ""},
	{"wire/ipv4-mapped-ipv6.sip", "accept", "accept", ""},
	{"wire/ipv6-bug-abnf-3-colons.sip", "accept", "accept", "tolerated, as RFC 5118 4.10 asks"},
	{"wire/ipv6-correct-abnf-2-colons.sip", "accept", "accept", ""},
}

// outcome runs the pipeline's validation on data: Raw first when dgram,
// then sipgo's parser, then Request or Response.
func outcome(t *testing.T, data []byte, dgram bool) string {
	t.Helper()
	if dgram {
		if r := Raw(data, Options{}); r != nil {
			if !r.Drop {
				t.Errorf("Raw verdict %q without Drop", r.Why)
			}
			return "drop:raw " + r.Why
		}
	}
	msg, err := sip.NewParser().ParseSIP(data)
	if err != nil {
		return "drop:parse"
	}
	var r *Result
	switch m := msg.(type) {
	case *sip.Request:
		r = Request(m, Options{})
	case *sip.Response:
		r = Response(m, Options{})
		if r != nil && !r.Drop {
			t.Errorf("Response verdict %q without Drop", r.Why)
		}
	}
	switch {
	case r == nil:
		return "accept"
	case r.Drop:
		return "drop " + r.Why
	}
	return strconv.Itoa(r.Code) + " " + r.Why
}

func runCorpus(t *testing.T, dir string, cases []corpusCase) {
	seen := map[string]bool{}
	for _, c := range cases {
		seen[c.file] = true
		t.Run(c.file, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if got := outcome(t, data, true); got != c.dgram {
				t.Errorf("datagram: got %q, want %q (%s)", got, c.dgram, c.note)
			}
			if got := outcome(t, data, false); got != c.stream {
				t.Errorf("stream: got %q, want %q (%s)", got, c.stream, c.note)
			}
		})
	}
	// Every message of the archive has a row, and every row a message.
	index := indexFiles(t, filepath.Join(dir, "INDEX.tsv"))
	for _, f := range index {
		if !seen[f] {
			t.Errorf("%s: in INDEX.tsv but not in the test table", f)
		}
	}
	if wire, _ := filepath.Glob(filepath.Join(dir, "wire", "*.sip")); len(wire) > 0 {
		for _, f := range wire {
			if rel := "wire/" + filepath.Base(f); !seen[rel] {
				t.Errorf("%s: not in the test table", rel)
			}
		}
	}
	if len(seen) != len(cases) {
		t.Errorf("duplicate rows in the test table")
	}
}

func indexFiles(t *testing.T, path string) []string {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for first := true; sc.Scan(); first = false {
		if first || sc.Text() == "" {
			continue
		}
		out = append(out, strings.SplitN(sc.Text(), "\t", 2)[0])
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestCorpusRFC4475(t *testing.T) {
	dir := filepath.Join(corpusDir(t), "rfc4475")
	checkSums(t, dir)
	runCorpus(t, dir, corpus4475)
}

func TestCorpusRFC5118(t *testing.T) {
	runCorpus(t, filepath.Join(corpusDir(t), "rfc5118"), corpus5118)
}

// checkSums guards against a corrupted copy of the archive: the table is
// about these exact bytes.
func checkSums(t *testing.T, dir string) {
	data, err := os.ReadFile(filepath.Join(dir, "SHA256SUMS"))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			t.Fatalf("SHA256SUMS: bad line %q", line)
		}
		b, err := os.ReadFile(filepath.Join(dir, f[1]))
		if err != nil {
			t.Fatal(err)
		}
		if sum := sha256.Sum256(b); hex.EncodeToString(sum[:]) != f[0] {
			t.Fatalf("%s: bytes differ from SHA256SUMS", f[1])
		}
	}
}

// TestCorpusDetails checks what the outcome strings do not show: the
// extra header of 420 and 415, and that dblreq's trailing request is not
// taken for a body.
func TestCorpusDetails(t *testing.T) {
	dir := filepath.Join(corpusDir(t), "rfc4475")
	parse := func(name string) *sip.Request {
		t.Helper()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		msg, err := sip.NewParser().ParseSIP(data)
		if err != nil {
			t.Fatal(err)
		}
		return msg.(*sip.Request)
	}

	r := Request(parse("bext01.dat"), Options{})
	if r == nil || r.Header == nil || r.Header.Name() != "Unsupported" ||
		r.Header.Value() != "nothingSupportsThis, nothingSupportsThisEither, noProxiesSupportThis, norDoAnyProxiesSupportThis" {
		t.Errorf("bext01: want 420 with every unknown tag in Unsupported, got %+v", r)
	}

	r = Request(parse("invut.dat"), Options{})
	if r == nil || r.Header == nil || r.Header.Name() != "Accept" || r.Header.Value() != "application/sdp, multipart/mixed" {
		t.Errorf("invut: want 415 with Accept, got %+v", r)
	}

	req := parse("dblreq.dat")
	if req.Method != sip.REGISTER || len(req.Body()) != 0 || Request(req, Options{}) != nil {
		t.Errorf("dblreq: want the first REGISTER, empty body, accepted; got %s body %d", req.Method, len(req.Body()))
	}
}
