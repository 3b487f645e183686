package policy

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2/unstable"
)

// This file walks the TOML document with go-toml's unstable parser, before
// the real decode, for two reasons:
//
//   - go-toml does not report where a decoded value came from, and
//     validation errors must carry line:col. The walk records, for every
//     concrete key path ("pool[1].target[0].address", "trunk[0].sources[2]"),
//     the position of the key and of its value.
//   - go-toml stops at the first type mismatch, and reports unknown keys only
//     when nothing else is wrong. The walk checks every key against the schema
//     (the toml tags of Policy) and every value against the field's type, so
//     that all these problems are reported together.
//
// Every top-level expression with such a problem (and every key/value under
// an unknown table) is then blanked out of a copy of the document, spaces
// replacing its bytes so that positions stay the same, and the paths it
// defined are marked bad. go-toml decodes that copy: it remains the
// authority, and anything it rejects that the walk did not (duplicate keys,
// table redefinitions) is reported as well. When it succeeds, semantic
// validation runs too, skipping the bad paths, so that a type error and,
// say, an unknown pool name elsewhere are reported together.

// pos is a 1-based line and byte column.
type pos struct{ line, col int }

// entry is where a key path appears in the file.
type entry struct {
	key pos // the key (for a table header: the header's key part)
	val pos // the value ('[' of an array, '{' of an inline table); key for tables
}

// index is the position index of one document plus the structural errors
// found while building it.
type index struct {
	file   string
	data   []byte
	lines  []int            // byte offset of the start of each line
	m      map[string]entry // concrete key path -> positions (first occurrence)
	arr    map[string]int   // array-of-tables path -> elements seen so far
	errs   Errors
	syntax bool // a TOML syntax error stopped the walk

	bad    map[string]bool // paths whose expressions were blanked out
	blanks []unstable.Range
}

// scope is the table that key/value lines currently belong to.
type scope struct {
	path string
	t    reflect.Type // struct type of the table
	ok   bool         // false inside an unknown or ill-typed table
}

var (
	policyType   = reflect.TypeFor[Policy]()
	durationType = reflect.TypeFor[Duration]()
)

func newIndex(file string, data []byte) *index {
	ix := &index{
		file:  file,
		data:  data,
		lines: []int{0},
		m:     make(map[string]entry),
		arr:   make(map[string]int),
		bad:   make(map[string]bool),
	}
	for i, c := range data {
		if c == '\n' {
			ix.lines = append(ix.lines, i+1)
		}
	}
	return ix
}

// posOf converts a byte offset into a line and column.
func (ix *index) posOf(off int) pos {
	off = max(0, min(off, len(ix.data)))
	i := sort.Search(len(ix.lines), func(i int) bool { return ix.lines[i] > off }) - 1
	return pos{line: i + 1, col: off - ix.lines[i] + 1}
}

// nodePos is the position of a node that carries a Raw range.
func (ix *index) nodePos(n *unstable.Node) pos { return ix.posOf(int(n.Raw.Offset)) }

// add records a problem at p.
func (ix *index) add(p pos, format string, args ...any) {
	ix.errs = append(ix.errs, Error{File: ix.file, Line: p.line, Col: p.col, Msg: fmt.Sprintf(format, args...)})
}

// setIfAbsent records path's position unless it is known already.
func (ix *index) setIfAbsent(path string, e entry) {
	if _, ok := ix.m[path]; !ok {
		ix.m[path] = e
	}
}

// has reports whether the file gave path explicitly.
func (ix *index) has(path string) bool {
	_, ok := ix.m[path]
	return ok
}

// at returns the position of path's value (val) or key (!val); when the file
// does not have path, the position of its closest ancestor that it has, or
// 1:1 as the last resort.
func (ix *index) at(path string, val bool) pos {
	for path != "" {
		if e, ok := ix.m[path]; ok {
			if val {
				return e.val
			}
			return e.key
		}
		path = parentPath(path)
	}
	return pos{1, 1}
}

// isBad reports whether path or one of its ancestors was blanked out
// because of a structural error.
func (ix *index) isBad(path string) bool {
	if len(ix.bad) == 0 {
		return false
	}
	for ; path != ""; path = parentPath(path) {
		if ix.bad[path] {
			return true
		}
	}
	return false
}

// parentPath strips the last component ("a.b[2]" -> "a.b" -> "a").
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndexByte(path, '['); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndexByte(path, '.'); i >= 0 {
		return path[:i]
	}
	return ""
}

func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func elemPath(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// build walks the whole document.
func (ix *index) build() {
	var p unstable.Parser
	p.Reset(ix.data)
	cur := scope{t: policyType, ok: true}
	for p.NextExpression() {
		e := p.Expression()
		n := len(ix.errs)
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			cur = ix.header(e)
			if !cur.ok {
				ix.bad[cur.path] = true
				ix.blankLine(e)
			}
		case unstable.KeyValue:
			path := ix.keyValue(cur, e)
			if !cur.ok || len(ix.errs) > n {
				ix.bad[path] = true
				ix.blanks = append(ix.blanks, e.Raw)
			}
		}
	}
	if err := p.Error(); err != nil {
		ix.syntax = true
		var pe *unstable.ParserError
		if errors.As(err, &pe) {
			ix.add(ix.posOf(ix.offsetOf(pe.Highlight)), "syntax error: %s", pe.Message)
		} else {
			ix.add(pos{1, 1}, "syntax error: %v", err)
		}
	}
}

// blankLine blanks the line of a table header (a header is one line).
func (ix *index) blankLine(e *unstable.Node) {
	it := e.Key()
	if !it.Next() {
		return
	}
	line := ix.posOf(int(it.Node().Raw.Offset)).line
	start := ix.lines[line-1]
	end := len(ix.data)
	if line < len(ix.lines) {
		end = ix.lines[line]
	}
	ix.blanks = append(ix.blanks, unstable.Range{Offset: uint32(start), Length: uint32(end - start)})
}

// sanitized returns the document with the blanked expressions replaced by
// spaces (newlines kept), or the document itself when nothing was blanked.
func (ix *index) sanitized() []byte {
	if len(ix.blanks) == 0 {
		return ix.data
	}
	doc := bytes.Clone(ix.data)
	for _, r := range ix.blanks {
		end := min(int(r.Offset)+int(r.Length), len(doc))
		for i := int(r.Offset); i < end; i++ {
			if doc[i] != '\n' {
				doc[i] = ' '
			}
		}
	}
	return doc
}

// offsetOf is the offset of b, a sub-slice of the document, in it.
func (ix *index) offsetOf(b []byte) int {
	off := cap(ix.data) - cap(b)
	if b == nil || off < 0 || off > len(ix.data) {
		return len(ix.data)
	}
	return off
}

// keyParts returns the key parts of a Table, ArrayTable or KeyValue node.
func keyParts(n *unstable.Node) []*unstable.Node {
	var parts []*unstable.Node
	it := n.Key()
	for it.Next() {
		parts = append(parts, it.Node())
	}
	return parts
}

// header handles a [table] or [[array.table]] line and returns the new scope.
func (ix *index) header(e *unstable.Node) scope {
	isArr := e.Kind == unstable.ArrayTable
	parts := keyParts(e)
	names := make([]string, len(parts))
	for i, kn := range parts {
		names[i] = string(kn.Data)
	}
	written := strings.Join(names, ".")
	path, t, ok := "", policyType, true
	for i, kn := range parts {
		name := names[i]
		last := i == len(parts)-1
		kp := ix.nodePos(kn)
		path = joinPath(path, name)
		if ok {
			ft, found := fieldType(t, name)
			switch {
			case !found:
				ix.unknown(kp, path, t, name, "table")
				ok = false
			case isTableArray(ft):
				if last && !isArr {
					ix.add(kp, "%s: is an array of tables: write [[%s]]", path, written)
					ok = false
				} else if !last && ix.arr[path] == 0 {
					ix.add(kp, "%s: [%s] needs a [[%s]] before it", path, written, path)
					ok = false
				}
				t = ft.Elem()
			case isTable(ft):
				if last && isArr {
					ix.add(kp, "%s: is a table, not an array of tables: write [%s]", path, written)
					ok = false
				}
				t = ft
			default:
				ix.add(kp, "%s: is a %s, not a table", path, typeName(ft))
				ok = false
			}
		}
		if last && isArr && ok {
			ix.setIfAbsent(path, entry{kp, kp})
			n := ix.arr[path]
			ix.arr[path] = n + 1
			path = elemPath(path, n)
			ix.setIfAbsent(path, entry{kp, kp})
			continue
		}
		if n := ix.arr[path]; n > 0 {
			path = elemPath(path, n-1)
		}
		ix.setIfAbsent(path, entry{kp, kp})
	}
	return scope{path: path, t: t, ok: ok}
}

// keyValue handles one key = value, at the top level, in a table or in an
// inline table, and returns the key's full path.
func (ix *index) keyValue(s scope, e *unstable.Node) string {
	parts := keyParts(e)
	if len(parts) == 0 {
		return s.path
	}
	path, t, ok := s.path, s.t, s.ok
	for _, kn := range parts[:len(parts)-1] { // dotted key: intermediate tables
		name := string(kn.Data)
		kp := ix.nodePos(kn)
		path = joinPath(path, name)
		if ok {
			ft, found := fieldType(t, name)
			switch {
			case !found:
				ix.unknown(kp, path, t, name, "key")
				ok = false
			case isTable(ft):
				t = ft
			default:
				ix.add(kp, "%s: is a %s, not a table", path, typeName(ft))
				ok = false
			}
		}
		ix.setIfAbsent(path, entry{kp, kp})
	}
	last := parts[len(parts)-1]
	name := string(last.Data)
	kp := ix.nodePos(last)
	path = joinPath(path, name)
	value := e.Value()
	vp := ix.valuePos(last, value)
	if !ix.has(path) { // else a duplicate key: go-toml reports it
		ix.m[path] = entry{kp, vp}
	}
	if !ok {
		return path
	}
	ft, found := fieldType(t, name)
	if !found {
		ix.unknown(kp, path, t, name, "key")
		return path
	}
	ix.value(path, ft, value, vp)
	return path
}

// valuePos finds where the value of a key/value starts: from the node itself
// when it carries a range (arrays do not), else by skipping "ws = ws" after
// the last key part.
func (ix *index) valuePos(lastKey, value *unstable.Node) pos {
	if value.Kind != unstable.Array && value.Raw.Length > 0 {
		return ix.nodePos(value)
	}
	off := int(lastKey.Raw.Offset + lastKey.Raw.Length)
	skip := func() {
		for off < len(ix.data) && (ix.data[off] == ' ' || ix.data[off] == '\t') {
			off++
		}
	}
	skip()
	if off < len(ix.data) && ix.data[off] == '=' {
		off++
		skip()
	}
	return ix.posOf(off)
}

// value checks a value node against the Go type of its field.
func (ix *index) value(path string, t reflect.Type, n *unstable.Node, vp pos) {
	mismatch := func() {
		ix.add(vp, "%s: expected %s, got %s", path, typeName(t), kindName(n.Kind))
	}
	switch {
	case t == durationType:
		if n.Kind != unstable.String {
			mismatch()
			return
		}
		if _, err := time.ParseDuration(string(n.Data)); err != nil {
			ix.add(vp, "%s: invalid duration %s (write a number and a unit: \"500ms\", \"5s\", \"10m\", \"4h\")", path, quote(string(n.Data)))
		}
	case t.Kind() == reflect.String:
		if n.Kind != unstable.String {
			mismatch()
		}
	case t.Kind() == reflect.Bool || (t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool):
		if n.Kind != unstable.Bool {
			mismatch()
		}
	case t.Kind() == reflect.Int || (t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Int):
		if n.Kind != unstable.Integer {
			mismatch()
			return
		}
		// TOML integer syntax (sign, 0x/0o/0b, underscores) is a subset of
		// Go's base-0 syntax; leading zeros were rejected by the parser.
		if _, err := strconv.ParseInt(string(n.Data), 0, 64); err != nil {
			ix.add(vp, "%s: integer %s is out of range", path, quote(string(n.Data)))
		}
	case isTable(t):
		if n.Kind != unstable.InlineTable {
			mismatch()
			return
		}
		it := n.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				ix.keyValue(scope{path: path, t: t, ok: true}, c)
			}
		}
	case t.Kind() == reflect.Slice:
		if n.Kind != unstable.Array {
			mismatch()
			return
		}
		i := 0
		it := n.Children()
		for it.Next() {
			c := it.Node()
			if c.Kind == unstable.Comment {
				continue
			}
			cp := elemPath(path, i)
			i++
			p := vp
			if c.Kind != unstable.Array && c.Raw.Length > 0 {
				p = ix.nodePos(c)
			}
			ix.m[cp] = entry{p, p}
			ix.value(cp, t.Elem(), c, p)
		}
	default:
		mismatch() // not reached for the Policy schema
	}
}

// removedKeys are keys an earlier version accepted, with what to do
// instead; a file that still sets one is told this.
var removedKeys = map[string]string{
	"autoblock.block_trunks": "removed: trunks are never blocked or demoted for failures a forged " +
		"source address can cause (see README, Edge defence: the trust model); delete the line",
}

// unknown reports an unknown key or table, with a suggestion.
func (ix *index) unknown(p pos, path string, t reflect.Type, name, what string) {
	if why, ok := removedKeys[path]; ok {
		ix.add(p, "%s: %s", path, why)
		return
	}
	known := fieldNames(t)
	path = shorten(path)
	if s := suggest(name, known); s != "" {
		ix.add(p, "%s: unknown %s (did you mean %q?)", path, what, s)
		return
	}
	ix.add(p, "%s: unknown %s (known here: %s)", path, what, strings.Join(known, ", "))
}

// fieldType finds the field of struct t whose toml tag is name (exactly:
// keys are case-sensitive, unlike go-toml's fallback matching). A pointer
// to a struct (an optional table) is reported as the struct.
func fieldType(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if tag := tomlName(f); tag != "" && tag == name {
			if f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct {
				return f.Type.Elem(), true // an optional table
			}
			return f.Type, true
		}
	}
	return nil, false
}

// fieldNames lists the toml keys of struct t, in declaration order.
func fieldNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		if tag := tomlName(t.Field(i)); tag != "" {
			names = append(names, tag)
		}
	}
	return names
}

func tomlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	tag, _, _ := strings.Cut(f.Tag.Get("toml"), ",")
	if tag == "-" {
		return ""
	}
	return tag
}

func isTable(t reflect.Type) bool { return t.Kind() == reflect.Struct && t != durationType }

func isTableArray(t reflect.Type) bool { return t.Kind() == reflect.Slice && isTable(t.Elem()) }

// typeName names what a Go field type expects, for error messages.
func typeName(t reflect.Type) string {
	switch {
	case t == durationType:
		return "duration string"
	case t.Kind() == reflect.String:
		return "string"
	case t.Kind() == reflect.Bool, t.Kind() == reflect.Pointer && t.Elem().Kind() == reflect.Bool:
		return "boolean"
	case t.Kind() == reflect.Int, t.Kind() == reflect.Pointer:
		return "integer"
	case isTable(t):
		return "table"
	case isTableArray(t):
		return "array of tables"
	case t.Kind() == reflect.Slice:
		return "array of " + typeName(t.Elem()) + "s"
	}
	return t.String()
}

// kindName names a TOML value kind, for error messages.
func kindName(k unstable.Kind) string {
	switch k {
	case unstable.String:
		return "string"
	case unstable.Integer:
		return "integer"
	case unstable.Float:
		return "float"
	case unstable.Bool:
		return "boolean"
	case unstable.Array:
		return "array"
	case unstable.InlineTable:
		return "table"
	case unstable.LocalDate:
		return "date"
	case unstable.LocalTime:
		return "time"
	case unstable.LocalDateTime, unstable.DateTime:
		return "date-time"
	}
	return k.String()
}

// suggest returns the known name closest to name (same letters in another
// case, or at most 2 edits away), or "".
func suggest(name string, known []string) string {
	for _, k := range known {
		if strings.EqualFold(k, name) {
			return k
		}
	}
	if len(name) > 64 {
		return ""
	}
	best, bestD := "", 3
	for _, k := range known {
		if d := editDistance(name, k); d < bestD {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of two short strings.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// quote quotes s for an error message, shortened when very long.
func quote(s string) string {
	const limit = 80
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "..."
	}
	return strconv.Quote(s)
}

// shorten cuts a key path or message taken from the file for an error
// message.
func shorten(s string) string {
	const limit = 120
	if len(s) > limit {
		return strings.ToValidUTF8(s[:limit], "") + "..."
	}
	return s
}
