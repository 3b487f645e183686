package policy

import (
	"fmt"
	"strings"
)

// Error is one problem found in a policy file, at a 1-based line and column
// (the column counts bytes, like go-toml's own errors).
type Error struct {
	File string
	Line int
	Col  int
	Msg  string
}

// Error formats the problem as "FILE:LINE:COL: message".
func (e Error) Error() string {
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// Errors is every problem found in one policy file, sorted by position.
// Parse and Load return it (as an error value, never empty) when the file
// is invalid; use errors.As to get at the individual problems.
type Errors []Error

// Error returns one "FILE:LINE:COL: message" line per problem.
func (es Errors) Error() string {
	var b strings.Builder
	for i, e := range es {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(e.Error())
	}
	return b.String()
}
