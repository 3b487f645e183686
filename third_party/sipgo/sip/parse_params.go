package sip

import (
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// growParams makes room in p, once, for as many params as s has
// separators before ending, plus one: appending them one by one grew the
// slice (1, 2, 4: up to three allocations for a Via's params).
func growParams(p *HeaderParams, s string, seperator, ending rune) {
	k := 1
	for _, c := range s {
		if c == ending {
			break
		}
		if c == seperator {
			k++
		}
	}
	if cap(*p)-len(*p) < k {
		*p = slices.Grow(*p, k)
	}
}

const (
	paramsStateNone = iota
	paramsStateKey
	paramsStateEqual
	paramsStateValue
	paramsStateQuote
)

func UnmarshalHeaderParams(s string, seperator rune, ending rune, p *HeaderParams) (n int, err error) {
	s = strings.TrimLeftFunc(s, unicode.IsSpace) // Remove trailing spaces
	if seperator >= 0 && seperator < utf8.RuneSelf && ending >= 0 && ending < utf8.RuneSelf {
		if n, ok := unmarshalParamsUnquoted(s, byte(seperator), byte(ending), p); ok {
			return n, nil
		}
	}
	growParams(p, s, seperator, ending)
	return unmarshalParamsRunes(s, seperator, ending, p), nil
}

// unmarshalParamsRunes is UnmarshalHeaderParams's state machine, a step
// per rune (upstream's loop).
func unmarshalParamsRunes(s string, seperator rune, ending rune, p *HeaderParams) (n int) {
	var start, sep, quote int = 0, 0, -1
	state := paramsStateKey
	n = len(s)
	for i, c := range s {
		if c == ending {
			n = i
			break
		}

		switch state {
		case paramsStateKey:
			sep = 0
			start = i
			state = paramsStateEqual

		case paramsStateEqual:
			if c == seperator {
				// Add support for empty values
				p.Add(s[start:i], "")
				state = paramsStateKey
				continue
			}

			if c != '=' {
				continue
			}

			sep = i
			state = paramsStateValue

		case paramsStateValue:
			switch c {
			case '"':
				state = paramsStateQuote
				quote = i
			case seperator:
				p.Add(s[start:sep], s[sep+1:i])
				start = sep + 1
				state = paramsStateKey
			}
		case paramsStateQuote:
			if c != '"' {
				//End quoute
				continue
			}
			p.Add(s[start:], s[quote+1:i])
			state = paramsStateKey
		}
	}

	// Do the last one
	if sep > 0 && n >= 0 && (start < sep) {
		p.Add(s[start:sep], s[sep+1:n])
	}
	// No seperator
	if sep == 0 && start < n && n >= 0 {
		p.Add(s[start:], "")
	}

	return n
}

// unmarshalParamsUnquoted is UnmarshalHeaderParams's state machine for
// params without a quote before the ending, with an ASCII separator and
// ending (every caller's), in jumps: strings.IndexByte to the ending,
// to each separator and '=', instead of a step per rune (~100 ns for a
// Via's params, ~1 % of the SBC's CPU per call). It keeps the rune
// loop's every quirk, down to the last param's key running past the
// ending when it has no '=' (FuzzUnmarshalParamsUnquoted compares the
// two). ok is false, and nothing is added, when there is a quote: the
// rune loop then runs.
func unmarshalParamsUnquoted(s string, seperator, ending byte, p *HeaderParams) (n int, ok bool) {
	n = strings.IndexByte(s, ending)
	if n < 0 {
		n = len(s)
	}
	if strings.IndexByte(s[:n], '"') >= 0 {
		return 0, false
	}
	if k := strings.Count(s[:n], string(rune(seperator))) + 1; cap(*p)-len(*p) < k {
		*p = slices.Grow(*p, k)
	}
	// start and sep as the rune loop has them when it reaches n.
	start, sep := 0, 0
	for i := 0; i < n; {
		// paramsStateKey: the byte at i starts a key (whatever it is).
		start, sep = i, 0
		// paramsStateEqual from i+1: up to a separator or '='.
		k := -1
		for j := i + 1; j < n; j++ {
			if c := s[j]; c == seperator || c == '=' {
				k = j
				break
			}
		}
		if k < 0 {
			break // the ending (or the end) in paramsStateEqual
		}
		if s[k] == seperator {
			p.Add(s[start:k], "")
			i = k + 1
			continue
		}
		// paramsStateValue from k+1: up to the next separator.
		sep = k
		m := strings.IndexByte(s[k+1:n], seperator)
		if m < 0 {
			break // the ending (or the end) in paramsStateValue
		}
		m += k + 1
		p.Add(s[start:sep], s[sep+1:m])
		start = sep + 1
		i = m + 1
	}
	// The rune loop's last param, as it does it.
	if sep > 0 && start < sep {
		p.Add(s[start:sep], s[sep+1:n])
	}
	if sep == 0 && start < n {
		p.Add(s[start:], "")
	}
	return n, true
}
