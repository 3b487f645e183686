package sbc

import (
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The catalogue (reasons.go) is only worth something if the code uses it:
// these tests read the package's source.

// sbcSource parses the package's non-test files.
func sbcSource(t *testing.T) (*token.FileSet, map[string]*ast.File) {
	t.Helper()
	names, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		files[n] = f
	}
	return fset, files
}

// stringConsts maps the package's string constants to their values.
func stringConsts(files map[string]*ast.File) map[string]string {
	out := map[string]string{}
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, sp := range g.Specs {
				vs := sp.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					switch v := vs.Values[i].(type) {
					case *ast.BasicLit:
						if s, err := strconv.Unquote(v.Value); err == nil {
							out[n.Name] = s
						}
					case *ast.SelectorExpr: // ratelimit.ReasonX: resolved by the caller if needed
						out[n.Name] = "@" + v.Sel.Name
					}
				}
			}
		}
	}
	return out
}

// typedConsts lists the constants declared with type typ, by name.
func typedConsts(files map[string]*ast.File, typ string) []string {
	var out []string
	for _, f := range files {
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.CONST {
				continue
			}
			for _, sp := range g.Specs {
				vs := sp.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); ok && id.Name == typ {
					for _, n := range vs.Names {
						out = append(out, n.Name)
					}
				}
			}
		}
	}
	slices.Sort(out)
	return out
}

func isStringLit(e ast.Expr) bool {
	b, ok := e.(*ast.BasicLit)
	return ok && b.Kind == token.STRING
}

func callName(c *ast.CallExpr) string {
	switch f := c.Fun.(type) {
	case *ast.Ident:
		return f.Name
	case *ast.SelectorExpr:
		return f.Sel.Name
	}
	return ""
}

// No stage, reason or failure is spelled as a literal where it is used:
// drop, answer, silent, charge, fail and verdict literals take the
// catalogue's constants.
func TestNoLiteralReasons(t *testing.T) {
	fset, files := sbcSource(t)
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.CallExpr:
				var args []ast.Expr
				switch callName(n) {
				case "drop", "answer", "silent":
					args = n.Args[:min(2, len(n.Args))]
				case "charge":
					args = n.Args
				case "fail":
					if len(n.Args) == 3 {
						args = n.Args[1:2]
					}
				}
				for _, a := range args {
					if isStringLit(a) {
						t.Errorf("%s: %s(…) with the literal %s: use a constant of reasons.go", fset.Position(a.Pos()), callName(n), a.(*ast.BasicLit).Value)
					}
				}
			case *ast.CompositeLit:
				if id, ok := n.Type.(*ast.Ident); ok && id.Name == "verdict" {
					for _, el := range n.Elts {
						kv, ok := el.(*ast.KeyValueExpr)
						if !ok {
							continue
						}
						if k, ok := kv.Key.(*ast.Ident); ok && (k.Name == "stage" || k.Name == "reason" || k.Name == "fail") && isStringLit(kv.Value) {
							t.Errorf("%s: verdict{%s: %s}: use a constant of reasons.go", fset.Position(kv.Pos()), k.Name, kv.Value.(*ast.BasicLit).Value)
						}
					}
				}
			}
			return true
		})
	}
}

// Every stage, reason and failure constant is in the catalogue's lists
// (dropReasons, failures), which the metrics documentation is checked
// against; no pair is listed twice.
func TestCatalogueComplete(t *testing.T) {
	_, files := sbcSource(t)
	consts := stringConsts(files)
	stages := map[string]bool{}
	pairs := map[string]bool{}
	for _, d := range dropReasons {
		if stages[string(d.stage)] {
			t.Errorf("stage %s listed twice in dropReasons", d.stage)
		}
		stages[string(d.stage)] = true
		if len(d.reasons) == 0 {
			t.Errorf("stage %s has no reason", d.stage)
		}
		for _, r := range d.reasons {
			k := string(d.stage) + "/" + string(r)
			if pairs[k] {
				t.Errorf("%s listed twice in dropReasons", k)
			}
			pairs[k] = true
		}
	}
	for _, name := range typedConsts(files, "stage") {
		if !stages[consts[name]] {
			t.Errorf("stage constant %s = %q is not in dropReasons", name, consts[name])
		}
	}
	inSome := map[string]bool{}
	for k := range pairs {
		inSome[k[strings.IndexByte(k, '/')+1:]] = true
	}
	for _, name := range typedConsts(files, "reason") {
		if !inSome[consts[name]] {
			t.Errorf("reason constant %s = %q is in no stage of dropReasons", name, consts[name])
		}
	}
	rl := ratelimitConsts(t)
	for _, name := range typedConsts(files, "failure") {
		if name == "failNone" {
			continue
		}
		v := consts[name]
		if strings.HasPrefix(v, "@") {
			v = rl[v[1:]]
		}
		if !slices.Contains(blockFailures, failure(v)) && !slices.Contains(trunkFailures, failure(v)) {
			t.Errorf("failure constant %s = %q is neither in blockFailures nor in trunkFailures", name, v)
		}
	}
}

// ratelimitConsts reads the ratelimit package's string constants (the
// failure reasons), by name.
func ratelimitConsts(t *testing.T) map[string]string {
	t.Helper()
	names, err := filepath.Glob(filepath.Join("..", "ratelimit", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	files := map[string]*ast.File{}
	for _, n := range names {
		if strings.HasSuffix(n, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, n, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files[n] = f
	}
	return stringConsts(files)
}

// The results sbc_calls_total can carry: every result the code passes
// to call.end, call.terminate, an evTerminate event or the Calls counter,
// and every result resultOf returns, is in callResults, and every entry
// of callResults is produced somewhere. (The call core spells some of
// them as literals; they are resolved here.)
func TestCallResultsProduced(t *testing.T) {
	fset, files := sbcSource(t)
	consts := stringConsts(files)
	// Expressions whose value comes from somewhere checked here: the
	// parameter of terminate, the field of an evTerminate event, a call's
	// recorded result.
	dynamic := map[string]bool{"reason": true, "ev.reason": true, "resultOf(res.StatusCode)": true, "label": true, "result": true}
	produced := map[string]bool{}
	check := func(e ast.Expr, where string) {
		var v string
		switch x := e.(type) {
		case *ast.BasicLit:
			v, _ = strconv.Unquote(x.Value)
		case *ast.Ident:
			c, ok := consts[x.Name]
			if !ok {
				if !dynamic[x.Name] {
					t.Errorf("%s: call result from %s: not a constant; extend this test", fset.Position(e.Pos()), x.Name)
				}
				return
			}
			v = c
		default:
			if s := exprString(e); !dynamic[s] {
				t.Errorf("%s: call result from %s: not a constant; extend this test", fset.Position(e.Pos()), s)
			}
			return
		}
		produced[v] = true
		if !slices.Contains(callResults, v) {
			t.Errorf("%s: %s produces call result %q, not in callResults", fset.Position(e.Pos()), where, v)
		}
	}
	for _, f := range files {
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Body == nil {
				continue
			}
			ast.Inspect(fd.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.CallExpr:
					sel, ok := n.Fun.(*ast.SelectorExpr)
					if !ok || len(n.Args) == 0 {
						return true
					}
					switch {
					case (sel.Sel.Name == "end" || sel.Sel.Name == "terminate") && exprString(sel.X) == "c":
						check(n.Args[0], sel.Sel.Name)
					case sel.Sel.Name == "WithLabelValues" && strings.HasSuffix(exprString(sel.X), ".Calls"):
						check(n.Args[0], "sbc_calls_total")
					case sel.Sel.Name == "callRefused" && exprString(sel.X) == "s" && len(n.Args) >= 2:
						check(n.Args[1], "callRefused")
					}
				case *ast.CompositeLit:
					if id, ok := n.Type.(*ast.Ident); ok && id.Name == "event" {
						var kind string
						var why ast.Expr
						for _, el := range n.Elts {
							if kv, ok := el.(*ast.KeyValueExpr); ok {
								switch exprString(kv.Key) {
								case "kind":
									kind = exprString(kv.Value)
								case "reason":
									why = kv.Value
								}
							}
						}
						if kind == "evTerminate" && why != nil {
							check(why, "evTerminate")
						}
					}
				case *ast.ReturnStmt:
					if fd.Name.Name == "resultOf" {
						for _, r := range n.Results {
							check(r, "resultOf")
						}
					}
				case *ast.AssignStmt:
					if fd.Name.Name == "finish" && len(n.Lhs) == 1 && exprString(n.Lhs[0]) == "label" {
						check(n.Rhs[0], "finish")
					}
				}
				return true
			})
		}
	}
	for _, r := range callResults {
		if !produced[r] {
			t.Errorf("callResults lists %q, which no code produces", r)
		}
	}
}

func exprString(e ast.Expr) string {
	switch x := e.(type) {
	case *ast.Ident:
		return x.Name
	case *ast.SelectorExpr:
		return exprString(x.X) + "." + x.Sel.Name
	case *ast.CallExpr:
		args := make([]string, len(x.Args))
		for i, a := range x.Args {
			args[i] = exprString(a)
		}
		return exprString(x.Fun) + "(" + strings.Join(args, ", ") + ")"
	case *ast.BasicLit:
		return x.Value
	}
	return "?"
}
