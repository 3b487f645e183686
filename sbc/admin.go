package sbc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"time"

	"github.com/sbc-project/sbc/acl"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// adminServer is the admin/metrics HTTP listener: /metrics (Prometheus),
// /healthz (liveness), /readyz (readiness), /v1/status, /v1/blocklist.
type adminServer struct {
	ln  net.Listener
	srv *http.Server
}

func (s *SBC) startAdmin(addr string) (*adminServer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	// Liveness: 200 whenever the process serves HTTP.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", s.handleReady)
	mux.HandleFunc("/v1/status", func(w http.ResponseWriter, r *http.Request) {
		n := 0
		s.calls.each(func(*call) { n++ })
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"calls": n, "policy": s.Policy().Source})
	})
	mux.HandleFunc("/v1/blocklist", s.handleBlocklist)
	// Every client of the admin listener (a scraper, an operator's host)
	// is never blocked: a flood forged in its name must not cut the
	// operator off (trust.go). The listener has no authentication yet:
	// keep it off the internet.
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
			s.def.learn(ap.Addr(), "")
		}
		mux.ServeHTTP(w, r)
	})
	a := &adminServer{ln: ln, srv: &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}}
	go func() {
		if err := a.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("admin listener stopped", "error", err)
		}
	}()
	return a, nil
}

func (a *adminServer) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = a.srv.Shutdown(ctx)
}

// PoolReadiness is one pool in the answer of /readyz.
type PoolReadiness struct {
	Targets int `json:"targets"`
	Up      int `json:"up"` // targets up and not drained (weight > 0)
}

// Readiness is the body of /readyz.
type Readiness struct {
	Ready bool                     `json:"ready"`
	Down  []string                 `json:"pools_down,omitempty"` // pools with no target up, sorted
	Pools map[string]PoolReadiness `json:"pools"`
}

// handleReady is readiness: 200 when every pool has at least one target
// that can take calls (up by its health checks, weight > 0), else 503
// naming the pools that have none. Targets count as up until their health
// checks say otherwise.
func (s *SBC) handleReady(w http.ResponseWriter, r *http.Request) {
	st := s.state.Load()
	rd := Readiness{Pools: make(map[string]PoolReadiness, len(st.pools))}
	for name, pl := range st.pools {
		pr := PoolReadiness{Targets: len(pl.targets)}
		for i, t := range pl.targets {
			if pl.weights[i] > 0 && t.isUp() {
				pr.Up++
			}
		}
		rd.Pools[name] = pr
		if pr.Up == 0 {
			rd.Down = append(rd.Down, name)
		}
	}
	slices.Sort(rd.Down)
	rd.Ready = len(rd.Down) == 0
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !rd.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	json.NewEncoder(w).Encode(rd)
}

// BlockRequest is the body of POST /v1/blocklist.
type BlockRequest struct {
	Prefix string `json:"prefix"`
	Reason string `json:"reason"`
	TTL    string `json:"ttl"` // Go duration; empty: until removed
	// Force blocks a prefix that overlaps the never-block list (a trunk
	// that may not register, a pool target, an admin client, never_block);
	// without it such a block is refused with 409 naming what it covers.
	Force bool `json:"force,omitempty"`
}

// handleBlocklist serves the blocklist: GET lists the entries, POST adds
// one (manual), DELETE ?prefix= removes one. Changes are accepted from
// loopback clients only, until the authenticated admin API exists.
func (s *SBC) handleBlocklist(w http.ResponseWriter, r *http.Request) {
	bl := s.def.blocklist
	switch r.Method {
	case http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		list := bl.List()
		if list == nil {
			list = []acl.Entry{}
		}
		json.NewEncoder(w).Encode(list)
		return
	case http.MethodPost, http.MethodDelete:
	default:
		w.Header().Set("Allow", "GET, POST, DELETE")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err != nil || !ap.Addr().Unmap().IsLoopback() {
		http.Error(w, "blocklist changes are accepted from loopback only", http.StatusForbidden)
		return
	}
	if r.Method == http.MethodDelete {
		pfx, err := acl.ParsePrefix(r.URL.Query().Get("prefix"))
		if err != nil {
			http.Error(w, "prefix: "+err.Error(), http.StatusBadRequest)
			return
		}
		if !bl.Remove(pfx) {
			http.Error(w, "no entry for "+pfx.String(), http.StatusNotFound)
			return
		}
		s.log.Info("blocklist entry removed", "prefix", pfx.String(), "by", "admin")
		if err := bl.Persist(); err != nil {
			s.log.Error("blocklist not saved after a manual removal", "prefix", pfx.String(), "error", err.Error())
			http.Error(w, fmt.Sprintf("removed %s, but the blocklist could not be saved (the entry comes back after a restart): %v", pfx, err), http.StatusInternalServerError)
			return
		}
		fmt.Fprintf(w, "removed %s\n", pfx)
		return
	}
	var req BlockRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		http.Error(w, "body: "+err.Error(), http.StatusBadRequest)
		return
	}
	pfx, err := acl.ParsePrefix(req.Prefix)
	if err != nil {
		http.Error(w, "prefix: "+err.Error(), http.StatusBadRequest)
		return
	}
	now := time.Now()
	e := acl.Entry{Prefix: pfx, Reason: req.Reason, Origin: acl.OriginManual, Created: now, Forced: req.Force}
	if e.Reason == "" {
		e.Reason = "manual"
	}
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil || d <= 0 {
			http.Error(w, "ttl: want a positive duration such as \"10m\"", http.StatusBadRequest)
			return
		}
		e.Expires = now.Add(d)
	}
	if err := bl.Add(e); err != nil {
		code := http.StatusBadRequest
		msg := err.Error()
		switch {
		case errors.Is(err, acl.ErrFull):
			code = http.StatusInsufficientStorage
		case errors.Is(err, acl.ErrNeverBlock):
			code = http.StatusConflict
			msg = fmt.Sprintf("refused: %s covers %s, which is never blocked; to block it anyway, add it with force (sbc block add -force)",
				pfx, s.protectedBy(pfx))
		}
		http.Error(w, msg, code)
		return
	}
	// The entry keeps the operator's free text; the metric's label is
	// a closed set, so every manual block counts as reason "manual".
	s.metrics.Blocks.WithLabelValues(blockOriginManual, blockReasonManual).Inc()
	expires := "never"
	if !e.Expires.IsZero() {
		expires = e.Expires.UTC().Format(time.RFC3339)
	}
	s.log.Info("blocklist entry added", "prefix", pfx.String(), "reason", e.Reason, "expires", expires, "by", "admin", "forced", e.Forced)
	if err := bl.Persist(); err != nil {
		s.log.Error("blocklist not saved after a manual block", "prefix", pfx.String(), "error", err.Error())
		http.Error(w, fmt.Sprintf("blocked %s, but the blocklist could not be saved (the block is lost at a restart): %v", pfx, err), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	got, _ := bl.Get(pfx)
	json.NewEncoder(w).Encode(got)
}
