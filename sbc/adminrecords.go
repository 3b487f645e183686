package sbc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
)

// Reading the SBC's own JSON-lines files over the admin API (role audit):
// the newest records of the audit log's and the CDR file's current file.
// Rotated files are not read: `sbc audit verify` and the operator's tools
// take those.

// maxTailBytes bounds what one request reads from the end of a file.
const maxTailBytes = 16 << 20

// maxTailRecords bounds the records one request returns.
const maxTailRecords = 1000

// tailRecords returns the last n complete JSON lines of the file at path
// (oldest first) that keep accepts, reading at most maxTailBytes from its
// end. A line cut short at the end (being written) is left out.
func tailRecords(path string, n int, keep func(json.RawMessage) bool) ([]json.RawMessage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	start := max(fi.Size()-maxTailBytes, 0)
	buf := make([]byte, fi.Size()-start)
	if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i] // the last complete line
	} else {
		return nil, nil
	}
	if start > 0 {
		// The window begins mid-line: skip to the first whole one.
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			buf = buf[i+1:]
		} else {
			return nil, nil
		}
	}
	var out []json.RawMessage
	for len(buf) > 0 && len(out) < n {
		line := buf
		if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
			line, buf = buf[i+1:], buf[:i]
		} else {
			buf = nil
		}
		if len(line) == 0 || !json.Valid(line) {
			continue
		}
		if keep == nil || keep(line) {
			out = append(out, json.RawMessage(line))
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out, nil
}

// Records is the answer of the record-reading endpoints.
type Records struct {
	File    string            `json:"file"`
	Records []json.RawMessage `json:"records"`
}

// tailLimit reads the limit query parameter: 1 to maxTailRecords, 100 by
// default.
func tailLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return 100, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxTailRecords {
		return 0, fmt.Errorf("limit: want a number from 1 to %d", maxTailRecords)
	}
	return n, nil
}

// handleAuditRead serves the newest records of the audit log's file
// ([audit] file), optionally only those of one event kind (?event=).
func (s *SBC) handleAuditRead(w http.ResponseWriter, r *http.Request) {
	var keep func(json.RawMessage) bool
	if ev := r.URL.Query().Get("event"); ev != "" {
		keep = func(line json.RawMessage) bool {
			var rec struct {
				Event string `json:"event"`
			}
			return json.Unmarshal(line, &rec) == nil && rec.Event == ev
		}
	}
	serveRecords(w, r, "audit", s.Policy().Audit.File, "the policy's [audit] has no file output", keep)
}

// handleCDRRead serves the newest call detail records of [cdr] file,
// optionally only those of one Call-ID of either leg (?call_id=).
func (s *SBC) handleCDRRead(w http.ResponseWriter, r *http.Request) {
	var keep func(json.RawMessage) bool
	if id := r.URL.Query().Get("call_id"); id != "" {
		keep = func(line json.RawMessage) bool {
			var rec struct {
				A string `json:"call_id_a"`
				B string `json:"call_id_b"`
			}
			return json.Unmarshal(line, &rec) == nil && (rec.A == id || rec.B == id)
		}
	}
	path := ""
	if c := s.Policy().CDR; c.Enabled {
		path = c.File
	}
	serveRecords(w, r, "CDR", path, "the policy's [cdr] is not enabled", keep)
}

// serveRecords answers with the newest records of the what file at path
// that keep accepts (?limit=), or 404 saying why when there is none.
func serveRecords(w http.ResponseWriter, r *http.Request, what, path, why string, keep func(json.RawMessage) bool) {
	if path == "" {
		adminError(w, http.StatusNotFound, "no "+what+" file: "+why)
		return
	}
	n, err := tailLimit(r)
	if err != nil {
		adminError(w, http.StatusBadRequest, err.Error())
		return
	}
	recs, err := tailRecords(path, n, keep)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		adminError(w, http.StatusInternalServerError, "reading the "+what+" file: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, Records{File: path, Records: recs})
}
