package sbc

import (
	"errors"
	"os"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/cdr"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/webhook"
)

// The operator outputs the policy configures besides the logs: the CDR
// file ([cdr]), the webhooks ([[webhook]]) and the HEP export ([hep],
// hep.go). They are opened by Start (a CDR file that cannot be opened
// fails it) and closed by Close after the calls in progress ended (their
// records are written). Each is restart-only (reload.go). None blocks a
// call or a sipgo callback: each has a bounded queue and a goroutine, and
// counts what it drops.

// outputs are the SBC's operator outputs.
type outputs struct {
	node  string // the host name, the CDRs' node
	cdr   *cdr.Writer
	hooks []*webhook.Hook
	hep   *hepExport
}

// openOutputs opens what p configures.
func (s *SBC) openOutputs(p *policy.Policy) (*outputs, error) {
	o := &outputs{}
	o.node, _ = os.Hostname()
	if c := p.CDR; c.Enabled {
		w, err := cdr.Open(cdr.Config{File: c.File, MaxSize: int64(c.MaxSizeMB) << 20, MaxFiles: c.MaxFiles, Queue: c.Queue,
			OnError: func(err error) { s.log.Error("cdr file", "error", err.Error()) }})
		if err != nil {
			return nil, err
		}
		o.cdr = w
	}
	for _, wh := range p.Webhooks {
		o.hooks = append(o.hooks, webhook.New(webhook.Config{
			Name: wh.Name, URL: wh.URL, Secret: wh.Key, Kinds: wh.Events, Timeout: wh.Timeout.Duration,
			MaxAttempts: wh.MaxAttempts, MaxBackoff: wh.MaxBackoff.Duration, Queue: wh.Queue,
			OnError: func(err error) { s.log.Warn("webhook delivery failed", "webhook", wh.Name, "error", err.Error()) },
		}))
	}
	if p.HEP.Enabled {
		h, err := s.openHEP(p.HEP)
		if err != nil {
			o.close()
			return nil, err
		}
		o.hep = h
	}
	return o, nil
}

// sinks are the outputs that take operator events.
func (o *outputs) sinks() []events.Sink {
	var out []events.Sink
	for _, h := range o.hooks {
		out = append(out, h)
	}
	return out
}

// wantsCDR reports whether any output takes CDRs.
func (o *outputs) wantsCDR() bool {
	if o == nil {
		return false
	}
	if o.cdr != nil {
		return true
	}
	for _, h := range o.hooks {
		if h.Wants(policy.CDRKind) {
			return true
		}
	}
	return false
}

// writeCDR hands a record to the outputs that take it (never blocks).
func (o *outputs) writeCDR(r *cdr.Record) {
	line, err := cdr.Marshal(r)
	if err != nil {
		return
	}
	if o.cdr != nil {
		o.cdr.Write(line)
	}
	for _, h := range o.hooks {
		h.Send(policy.CDRKind, line[:len(line)-1])
	}
}

// outputsCloseWait bounds how long Close waits for each output to flush.
const outputsCloseWait = 2 * time.Second

func (o *outputs) close() error {
	if o == nil {
		return nil
	}
	var errs []error
	if o.hep != nil {
		o.hep.close()
	}
	for _, h := range o.hooks {
		h.Close(outputsCloseWait)
	}
	if o.cdr != nil {
		errs = append(errs, o.cdr.Close(outputsCloseWait))
	}
	return errors.Join(errs...)
}

// outputStats are the counters of the outputs, for the metrics.
type outputStats struct {
	cdr   cdr.Stats
	hep   hepStats
	hooks map[string]webhook.Stats
}

func (o *outputs) stats() outputStats {
	st := outputStats{hooks: map[string]webhook.Stats{}}
	if o == nil {
		return st
	}
	if o.cdr != nil {
		st.cdr = o.cdr.Stats()
	}
	if o.hep != nil {
		st.hep = o.hep.stats()
	}
	for _, h := range o.hooks {
		st.hooks[h.Name()] = h.Stats()
	}
	return st
}

// The result label values of the output metrics.
var (
	cdrResults     = []string{"written", "dropped", "failed"}
	hepResults     = []string{"sent", "dropped", "failed"}
	webhookResults = []string{"delivered", "failed", "dropped"}
)

var (
	cdrRecordsDesc = prometheus.NewDesc("sbc_cdr_records_total",
		"Call detail records by result: written to the CDR file, dropped (its queue was full) or failed (a write error).", []string{"result"}, nil)
	cdrRotationsDesc = prometheus.NewDesc("sbc_cdr_rotations_total",
		"Rotations of the CDR file (cdr.max_size_mb reached).", nil, nil)
	hepPacketsDesc = prometheus.NewDesc("sbc_hep_packets_total",
		"HEP3 packets of SIP messages by result: sent to the collector, dropped (the queue was full) or failed (a send error).", []string{"result"}, nil)
	webhookEventsDesc = prometheus.NewDesc("sbc_webhook_events_total",
		"Events and CDRs of a webhook by result: delivered (2xx), failed (given up after its attempts or a final status) or dropped (the queue was full).", []string{"webhook", "result"}, nil)
	webhookRetriesDesc = prometheus.NewDesc("sbc_webhook_retries_total",
		"Delivery attempts of a webhook after a failed one.", []string{"webhook"}, nil)
)

// outputsCollector exports the outputs' counters; stats reads the current
// outputs (none: all zero).
type outputsCollector struct{ stats func() outputStats }

func (c outputsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{cdrRecordsDesc, cdrRotationsDesc, hepPacketsDesc, webhookEventsDesc, webhookRetriesDesc} {
		ch <- d
	}
}

func (c outputsCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	for i, v := range []uint64{st.cdr.Written, st.cdr.Dropped, st.cdr.Failed} {
		counter(cdrRecordsDesc, v, cdrResults[i])
	}
	counter(cdrRotationsDesc, st.cdr.Rotated)
	for i, v := range []uint64{st.hep.sent, st.hep.dropped, st.hep.failed} {
		counter(hepPacketsDesc, v, hepResults[i])
	}
	for name, h := range st.hooks {
		for i, v := range []uint64{h.Delivered, h.Failed, h.Dropped} {
			counter(webhookEventsDesc, v, name, webhookResults[i])
		}
		counter(webhookRetriesDesc, h.Retries, name)
	}
}
