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

func cmdRun(args []string, stdout, stderr io.Writer) int {
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
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: levelOf(p.Server.LogLevel)}))
	if *cfg == "" {
		log.Warn("no policy file given: running the embedded example policy (loopback only); pass FILE or -config FILE", "policy", p.Source)
	}
	s, err := sbc.New(p, sbc.Options{Logger: log})
	if err != nil {
		log.Error("cannot build sbc", "error", err.Error())
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := s.Start(ctx); err != nil {
		log.Error("cannot start sbc", "error", err.Error())
		return 1
	}
	if *cfg != "" {
		go watchPolicy(ctx, *cfg, s, log)
	}
	<-ctx.Done()
	log.Info("shutting down")
	s.Close()
	return 0
}

func levelOf(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// watchPolicy reloads the policy on SIGHUP and when the file changes. The
// directory is watched, not the file: editors and config management
// replace files by rename. An invalid policy is logged and ignored: the
// one in force stays.
func watchPolicy(ctx context.Context, path string, s *sbc.SBC, log *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	var events <-chan fsnotify.Event
	if w, err := fsnotify.NewWatcher(); err != nil {
		log.Warn("policy file watch unavailable; reload with SIGHUP", "error", err.Error())
	} else {
		defer w.Close()
		if err := w.Add(filepath.Dir(path)); err != nil {
			log.Warn("policy file watch unavailable; reload with SIGHUP", "error", err.Error())
		} else {
			events = w.Events
		}
	}
	abs, _ := filepath.Abs(path)
	var debounce <-chan time.Time
	reload := func(why string) {
		p, err := policy.Load(path)
		if err != nil {
			log.Error("policy reload rejected; keeping the policy in force", "trigger", why, "error", err.Error())
			return
		}
		if err := s.Reload(p); err != nil {
			log.Error("policy reload rejected; keeping the policy in force", "trigger", why, "error", err.Error())
		}
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			reload("sighup")
		case ev := <-events:
			if a, _ := filepath.Abs(ev.Name); a == abs && ev.Op&(fsnotify.Write|fsnotify.Create|fsnotify.Rename) != 0 {
				debounce = time.After(200 * time.Millisecond)
			}
		case <-debounce:
			reload("file_change")
		}
	}
}
