package media

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
)

// The ng control protocol of rtpengine is bencode over UDP: "cookie dict".
// These are the few bencode rules it needs (BEP 3): strings, integers,
// lists and dictionaries with sorted keys.

// encodeBencode writes v: string, []byte, int, int64, []string, []any or
// map[string]any (recursively).
func encodeBencode(buf *bytes.Buffer, v any) error {
	switch x := v.(type) {
	case string:
		buf.WriteString(strconv.Itoa(len(x)))
		buf.WriteByte(':')
		buf.WriteString(x)
	case []byte:
		buf.WriteString(strconv.Itoa(len(x)))
		buf.WriteByte(':')
		buf.Write(x)
	case int:
		fmt.Fprintf(buf, "i%de", x)
	case int64:
		fmt.Fprintf(buf, "i%de", x)
	case []string:
		buf.WriteByte('l')
		for _, s := range x {
			_ = encodeBencode(buf, s)
		}
		buf.WriteByte('e')
	case []any:
		buf.WriteByte('l')
		for _, e := range x {
			if err := encodeBencode(buf, e); err != nil {
				return err
			}
		}
		buf.WriteByte('e')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		buf.WriteByte('d')
		for _, k := range keys {
			_ = encodeBencode(buf, k)
			if err := encodeBencode(buf, x[k]); err != nil {
				return fmt.Errorf("%s: %w", k, err)
			}
		}
		buf.WriteByte('e')
	default:
		return fmt.Errorf("bencode: cannot encode %T", v)
	}
	return nil
}

// maxBencodeDepth bounds nesting, so a hostile reply cannot exhaust the
// stack.
const maxBencodeDepth = 32

var errBencode = errors.New("bencode: malformed")

// decodeBencode reads one value from b and returns it (string, int64,
// []any or map[string]any) with the rest of b.
func decodeBencode(b []byte) (any, []byte, error) { return decodeDepth(b, 0) }

func decodeDepth(b []byte, depth int) (any, []byte, error) {
	if depth > maxBencodeDepth {
		return nil, nil, fmt.Errorf("%w: nested deeper than %d", errBencode, maxBencodeDepth)
	}
	if len(b) == 0 {
		return nil, nil, fmt.Errorf("%w: unexpected end", errBencode)
	}
	switch c := b[0]; {
	case c == 'i':
		end := bytes.IndexByte(b, 'e')
		if end < 0 {
			return nil, nil, fmt.Errorf("%w: unterminated integer", errBencode)
		}
		n, err := strconv.ParseInt(string(b[1:end]), 10, 64)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: integer %q", errBencode, b[1:end])
		}
		return n, b[end+1:], nil
	case c == 'l':
		list := []any{}
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			v, rest, err := decodeDepth(b, depth+1)
			if err != nil {
				return nil, nil, err
			}
			list, b = append(list, v), rest
		}
		if len(b) == 0 {
			return nil, nil, fmt.Errorf("%w: unterminated list", errBencode)
		}
		return list, b[1:], nil
	case c == 'd':
		dict := map[string]any{}
		b = b[1:]
		for len(b) > 0 && b[0] != 'e' {
			k, rest, err := decodeDepth(b, depth+1)
			if err != nil {
				return nil, nil, err
			}
			key, ok := k.(string)
			if !ok {
				return nil, nil, fmt.Errorf("%w: dictionary key is %T", errBencode, k)
			}
			v, rest, err := decodeDepth(rest, depth+1)
			if err != nil {
				return nil, nil, err
			}
			dict[key], b = v, rest
		}
		if len(b) == 0 {
			return nil, nil, fmt.Errorf("%w: unterminated dictionary", errBencode)
		}
		return dict, b[1:], nil
	case c >= '0' && c <= '9':
		colon := bytes.IndexByte(b, ':')
		if colon < 0 {
			return nil, nil, fmt.Errorf("%w: string without length", errBencode)
		}
		n, err := strconv.Atoi(string(b[:colon]))
		if err != nil || n < 0 || n > len(b)-colon-1 {
			return nil, nil, fmt.Errorf("%w: string length %q", errBencode, b[:colon])
		}
		return string(b[colon+1 : colon+1+n]), b[colon+1+n:], nil
	}
	return nil, nil, fmt.Errorf("%w: unexpected byte %q", errBencode, b[0])
}
