package validate

import "bytes"

// Frame finds the end of the first message of a stream (TCP, TLS), data
// holding the bytes from the start of that message on: its header section
// up to the empty line, and the body its Content-Length announces (RFC
// 3261 18.3: on a stream, Content-Length is what frames a message).
//
// It returns the length of the message when data holds all of it; 0 and
// nil when more bytes are needed; 0 and a verdict (Drop set, like Raw's)
// when the stream cannot be framed: the header section or the whole
// message would exceed MaxMessageSize (too_large), Content-Length is
// missing (missing_header_content_length), not 1*DIGIT
// (bad_content_length), or given twice with different values
// (dup_header_content_length). There is no message boundary to resume at
// after such a verdict: close the connection.
//
// Frame looks at nothing else (call Raw on the framed message), and does
// not allocate. Leading CRLFs (keep-alives between messages) are the
// caller's to remove first.
func Frame(data []byte, opt Options) (int, *Result) {
	maxSize := opt.MaxMessageSize
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	end := bytes.Index(data, []byte("\r\n\r\n"))
	if end < 0 {
		if len(data) > maxSize {
			return 0, rTooLarge.drop
		}
		return 0, nil
	}
	head := end + 4
	if head > maxSize {
		return 0, rTooLarge.drop
	}
	var (
		count   int
		val     uint64
		inCL    bool
		state   int
		first   = true
		settled uint64 // the value of the first complete Content-Length
	)
	closeCL := func() *Result {
		if !inCL {
			return nil
		}
		inCL = false
		if state == 0 || state == 3 {
			return rContentLength.drop
		}
		if count > 1 && val != settled {
			return rDup[kContentLength].drop
		}
		settled = val
		return nil
	}
	for i := 0; i < end+2; {
		j := bytes.Index(data[i:end+2], []byte("\r\n"))
		line := data[i : i+j]
		i += j + 2
		if first {
			first = false
			continue
		}
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if inCL {
				for _, c := range line {
					state, val = clStep(state, val, c)
				}
			}
			continue
		}
		if r := closeCL(); r != nil {
			return 0, r
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			continue // not a header line: Raw tells
		}
		name := bytes.TrimRight(line[:colon], " \t")
		if kindOfName(name) != kContentLength {
			continue
		}
		count++
		inCL, state, val = true, 0, 0
		for _, c := range line[colon+1:] {
			state, val = clStep(state, val, c)
		}
	}
	if r := closeCL(); r != nil {
		return 0, r
	}
	if count == 0 {
		return 0, rMissing[kContentLength].drop
	}
	if uint64(head)+settled > uint64(maxSize) {
		return 0, rTooLarge.drop
	}
	total := head + int(settled)
	if len(data) < total {
		return 0, nil
	}
	return total, nil
}
