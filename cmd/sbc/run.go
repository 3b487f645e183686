package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

// defaultPolicy is the policy "sbc run" runs without a file: the embedded
// example. Tests replace it (the example binds fixed ports).
var defaultPolicy = policy.Default

func cmdRun(args []string, stderr io.Writer) int {
	// Catch the signals before anything else: until signal.Notify, SIGHUP
	// (and SIGTERM, SIGINT) kill the process. Signals that arrive while the
	// SBC starts wait in the channels and are handled once it runs.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	term := make(chan os.Signal, 1)
	signal.Notify(term, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(term)

	fs := newFlags("run", stderr)
	cfg := fs.String("config", "", "policy file (TOML); same as FILE; neither: the embedded example policy")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sbc run [FILE | -config FILE]")
		fs.PrintDefaults()
	}
	if code, ok := parseConfigArgs(fs, args, cfg, stderr); !ok {
		return code
	}
	var p *policy.Policy
	if *cfg == "" {
		p = defaultPolicy()
	} else {
		var err error
		if p, err = policy.Load(*cfg); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	// The handler's level is a LevelVar the SBC sets to log_level on every
	// reload (Options.LogLevel): a fixed level would ignore log_level
	// changes until a restart.
	level := new(slog.LevelVar)
	level.Set(policy.SlogLevel(p.Server.LogLevel))
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))
	if *cfg == "" {
		log.Warn("no policy file given: running the embedded example policy (loopback only); pass FILE or -config FILE", "policy", p.Source)
	}
	s, err := sbc.New(p, sbc.Options{Logger: log, LogLevel: level, Version: versionString(), ManageGC: true})
	if err != nil {
		log.Error("cannot build sbc", "error", err.Error())
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := s.Start(ctx); err != nil {
		log.Error("cannot start sbc", "error", err.Error())
		return 1
	}
	logListeners(log, s)
	var changed <-chan struct{}
	if *cfg != "" {
		changed = watchPolicy(ctx, *cfg, log)
	}
	for {
		select {
		case sig := <-term:
			log.Info("shutting down", "signal", sig.String())
			cancel()
			s.Close()
			return 0
		case <-hup:
			if *cfg == "" {
				log.Info("SIGHUP: no policy file to reload (running the embedded example policy); the policy in force stays")
				continue
			}
			reloadPolicy(*cfg, "sighup", s, log)
		case <-changed:
			reloadPolicy(*cfg, "file_change", s, log)
		}
	}
}

// logListeners writes one line per SIP listener and one for the admin
// listener, with the addresses actually bound.
func logListeners(log *slog.Logger, s *sbc.SBC) {
	for _, l := range s.Listeners() {
		log.Info("listening", "realm", l.Realm, "transport", l.Transport, "bind", l.Bind.String(), "advertise", l.Advertise)
	}
	if a := s.AdminAddr(); a != nil {
		log.Info("admin listening", "bind", a.String())
	} else {
		log.Info("admin listener disabled")
	}
}

// reloader is what reloadPolicy needs of the SBC.
type reloader interface {
	ReloadFile(path string) error
}

// reloadPolicy reloads the policy file at path, and logs what triggered
// the reload. Its outcome is the SBC's to log and count: ReloadFile logs
// every result itself (INFO in force; WARN rejected, the policy in force
// kept; WARN partial, the new policy in force) and counts it in
// sbc_reload_total, a file that does not load included. A line here would
// repeat it, and could not say the right thing for every result.
func reloadPolicy(path, why string, s reloader, log *slog.Logger) {
	log.Info("reloading the policy file", "trigger", why, "policy", path)
	_ = s.ReloadFile(path) // logged and counted by the SBC
}

// watchPolicy reports changes of the policy file (debounced) until ctx
// ends. The directory is watched, not the file: editors and config
// management replace files by rename. Without a watch, SIGHUP still
// reloads.
func watchPolicy(ctx context.Context, path string, log *slog.Logger) <-chan struct{} {
	out := make(chan struct{}, 1)
	w, err := fsnotify.NewWatcher()
	if err != nil {
		log.Warn("policy file watch unavailable; reload with SIGHUP", "error", err.Error())
		return out
	}
	if err := w.Add(filepath.Dir(path)); err != nil {
		w.Close()
		log.Warn("policy file watch unavailable; reload with SIGHUP", "error", err.Error())
		return out
	}
	abs, _ := filepath.Abs(path)
	log.Info("watching the policy file: a change reloads it", "policy", path)
	go func() {
		defer w.Close()
		var debounce <-chan time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case err, ok := <-w.Errors:
				if !ok {
					return
				}
				log.Warn("policy file watch", "error", err.Error())
			case ev, ok := <-w.Events:
				if !ok {
					return
				}
				if a, _ := filepath.Abs(ev.Name); a == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
					debounce = time.After(200 * time.Millisecond)
				}
			case <-debounce:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return out
}
