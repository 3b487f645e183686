package attack

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeCorpus writes a small corpus in the RFC 4475 layout.
func fakeCorpus(t testing.TB, index string, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "INDEX.tsv"), []byte(index), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const fakeIndex = "filename\tsection\tclass\ttitle\texpected_behaviour\n" +
	"ok.dat\t1\tvalid\tfine\taccept\n" +
	"bad1.dat\t2\tinvalid\tbad one\treject\n" +
	"sem.dat\t3\tsemantic\todd\treject\n" +
	"bad2.dat\t4\tINVALID\tbad two\treject\n"

var fakeFiles = map[string]string{
	"ok.dat": "OPTIONS sip:a@b SIP/2.0\r\n\r\n", "bad1.dat": "BAD1", "sem.dat": "SEM", "bad2.dat": "BAD2\x00",
}

func TestLoadRFC4475(t *testing.T) {
	dir := fakeCorpus(t, fakeIndex, fakeFiles)
	got, err := LoadRFC4475(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "bad1.dat" || string(got[1].Data) != "BAD2\x00" || got[1].Section != "4" || got[1].Class != "invalid" {
		t.Fatalf("%+v", got)
	}
	got, err = LoadRFC4475(dir, "semantic", "valid")
	if err != nil || len(got) != 2 || got[0].Name != "ok.dat" || got[1].Name != "sem.dat" {
		t.Fatalf("%+v %v", got, err)
	}
	for name, index := range map[string]string{
		"traversal": "../etc.dat\t1\tinvalid\tx\ty\n",
		"missing":   "nothere.dat\t1\tinvalid\tx\ty\n",
	} {
		if _, err := LoadRFC4475(fakeCorpus(t, index, nil)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := LoadRFC4475(t.TempDir()); err == nil {
		t.Error("no INDEX.tsv: no error")
	}
}

// TestLoadRFC4475Shared reads the real corpus when it is there.
func TestLoadRFC4475Shared(t *testing.T) {
	dir := os.Getenv("SBC_RFC4475_DIR")
	if dir == "" {
		dir = "../../../shared/corpora/rfc4475"
	}
	if _, err := os.Stat(filepath.Join(dir, "INDEX.tsv")); err != nil {
		t.Skipf("no RFC 4475 corpus at %s (set SBC_RFC4475_DIR)", dir)
	}
	got, err := LoadRFC4475(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 19 { // RFC 4475 section 3.1.2 has 19 invalid messages
		t.Errorf("%d invalid messages, want 19", len(got))
	}
	for _, m := range got {
		if !strings.HasPrefix(m.Section, "3.1.2.") || len(m.Data) == 0 {
			t.Errorf("%s: section %s, %d bytes", m.Name, m.Section, len(m.Data))
		}
	}
}

func TestMalformedGenerator(t *testing.T) {
	dir := fakeCorpus(t, fakeIndex, fakeFiles)
	cfg := MalformedStormConfig{CorpusDir: dir, Seed: 42, MaxSize: 6000}
	a, err := NewMalformedGenerator(cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := NewMalformedGenerator(cfg)
	cfg.Seed = 43
	c, _ := NewMalformedGenerator(cfg)
	kinds := map[string]int{}
	differ := false
	for i := range 3000 {
		ma, mb, mc := a.Next(), b.Next(), c.Next()
		if ma.Kind != mb.Kind || !bytes.Equal(ma.Data, mb.Data) {
			t.Fatalf("datagram %d differs for the same seed: %s vs %s", i, ma.Kind, mb.Kind)
		}
		if !bytes.Equal(ma.Data, mc.Data) {
			differ = true
		}
		if len(ma.Data) > 6000 {
			t.Fatalf("%s: %d bytes over MaxSize", ma.Kind, len(ma.Data))
		}
		if i%2 == 0 {
			want := []string{"rfc4475:bad1.dat", "rfc4475:bad2.dat"}[(i/2)%2]
			if ma.Kind != want {
				t.Fatalf("datagram %d is %s, want %s", i, ma.Kind, want)
			}
		}
		kinds[ma.Kind]++
		ma.Data = append(ma.Data[:0], "scribble"...) // the caller owns Data
		switch ma.Kind {
		case "empty":
			if len(mb.Data) != 0 {
				t.Fatalf("empty has %d bytes", len(mb.Data))
			}
		case "huge-header":
			if len(mb.Data) <= 4096 {
				t.Fatalf("huge-header has %d bytes", len(mb.Data))
			}
		case "nul":
			if !bytes.Contains(mb.Data, []byte{0}) {
				t.Fatalf("nul has none: %q", mb.Data)
			}
		case "truncated":
			if bytes.Contains(mb.Data, []byte("\r\n\r\n")) {
				t.Fatalf("truncated has a complete header: %q", mb.Data)
			}
		case "bad-content-length":
			if bytes.Contains(mb.Data, []byte("Content-Length: "+strconv.Itoa(len(mb.Data)-headerEnd(mb.Data)-4)+"\r\n")) &&
				bytes.Count(mb.Data, []byte("Content-Length")) == 1 {
				t.Fatalf("bad-content-length is correct: %q", mb.Data)
			}
		}
	}
	if !differ {
		t.Error("seeds 42 and 43 gave the same datagrams")
	}
	for _, k := range MalformedKinds() {
		if kinds[k] == 0 {
			t.Errorf("kind %s never generated", k)
		}
	}
	if kinds["rfc4475:bad1.dat"] != 750 || kinds["rfc4475:sem.dat"] != 0 {
		t.Errorf("corpus share: %v", kinds)
	}
	if _, err := NewMalformedGenerator(MalformedStormConfig{MaxSize: 100}); err == nil {
		t.Error("MaxSize 100 accepted")
	}
	if _, err := NewMalformedGenerator(MalformedStormConfig{CorpusDir: dir, Classes: []string{"nope"}}); err == nil {
		t.Error("empty corpus selection accepted")
	}
}

func TestMalformedStorm(t *testing.T) {
	dir := fakeCorpus(t, fakeIndex, fakeFiles)
	sink, err := NewSink(SinkConfig{Addr: netipAddrPort("127.0.0.1:0"), Keep: 1000})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	cfg := MalformedStormConfig{Target: sink.Addr(), Local: local66, CorpusDir: dir, Seed: 7, Count: 300, Rate: 5000}
	rep, err := MalformedStorm(testCtx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 300 || rep.Stop != StopCount || rep.Errors != 0 {
		t.Fatalf("report %s", rep)
	}
	if err := sink.Wait(testCtx(t), 300); err != nil {
		t.Fatal(err)
	}
	// What arrived is what the generator makes for the seed.
	g, _ := NewMalformedGenerator(cfg)
	var want, got []string
	for range 300 {
		want = append(want, string(g.Next().Data))
	}
	for _, d := range sink.Payloads() {
		if d.From.Addr() != local66.Addr() {
			t.Fatalf("datagram from %s", d.From)
		}
		got = append(got, string(d.Data))
	}
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(want, got) {
		t.Error("received datagrams differ from the generator's")
	}
}

func TestMalformedStormResponses(t *testing.T) {
	// A peer answering every datagram with 400, parseable or not.
	peer := newResponder(t, func(received) [][]byte { return [][]byte{[]byte("SIP/2.0 400 Bad Request\r\n\r\n")} })
	rep, err := MalformedStorm(testCtx(t), MalformedStormConfig{
		Target: peer.addr(), Local: local66, Seed: 1, Count: 100, Rate: 5000, Linger: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Sent != 100 || rep.Responses[400] != 100 {
		t.Fatalf("report %s", rep)
	}
	if _, err := MalformedStorm(testCtx(t), MalformedStormConfig{Count: 1}); err == nil {
		t.Error("no target accepted")
	}
}
