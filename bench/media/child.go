package media

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"time"
)

// Relay is a running relay child seen from the harness.
type Relay struct {
	cmd    *exec.Cmd
	in     io.WriteCloser
	out    *bufio.Scanner
	stderr *lockedBuffer
	done   chan struct{}
	Reply  RelayReply
}

// StartRelay starts this program again as the relay child (see
// RunChildIfAsked), with GOMAXPROCS procs (0: the default), and sets up
// the streams.
func StartRelay(setup RelaySetup, procs int) (*Relay, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-test.run=^$") // ignored by a command; keeps a test binary from running tests if the env is lost
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	if procs > 0 {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+strconv.Itoa(procs))
	}
	r := &Relay{cmd: cmd, stderr: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stderr = r.stderr
	if r.in, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	r.out = bufio.NewScanner(stdout)
	r.out.Buffer(make([]byte, 1<<20), 64<<20)
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = cmd.Wait(); close(r.done) }()
	if err := r.call(setup, &r.Reply); err != nil {
		r.Close()
		return nil, err
	}
	if r.Reply.Err != "" {
		r.Close()
		return nil, errors.New("relay: " + r.Reply.Err)
	}
	return r, nil
}

// call writes one line (a JSON value, or a bare command for a string) and
// decodes the answer line into reply.
func (r *Relay) call(req any, reply any) error {
	var line []byte
	if s, ok := req.(string); ok {
		line = []byte(s)
	} else {
		var err error
		if line, err = json.Marshal(req); err != nil {
			return err
		}
	}
	if _, err := r.in.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("relay: %w; %s", err, r.stderr.tail())
	}
	if !r.out.Scan() {
		return fmt.Errorf("relay: no answer (%v); %s", r.out.Err(), r.stderr.tail())
	}
	return json.Unmarshal(r.out.Bytes(), reply)
}

// Pid is the child's process id.
func (r *Relay) Pid() int { return r.cmd.Process.Pid }

// Ready waits until every DTLS leg of the child has its keys.
func (r *Relay) Ready() error {
	var res struct{ Err string }
	if err := r.call("ready", &res); err != nil {
		return err
	}
	if res.Err != "" {
		return errors.New("relay: " + res.Err)
	}
	return nil
}

// Stats asks the child for its counters and memory.
func (r *Relay) Stats() (RelayStats, error) {
	var st RelayStats
	err := r.call("stats", &st)
	return st, err
}

// Close ends the child (its input closes: it closes its streams and
// exits) and waits for it, killing it after 10 s.
func (r *Relay) Close() {
	_ = r.in.Close()
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
}
