package sbc

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// docs/openapi.yaml against the route table: every route is documented
// with its method, path parameters and role (x-sbc-role), and nothing is
// documented that the SBC does not serve. Every $ref resolves and every
// operationId is unique.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	b, err := os.ReadFile("../docs/openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		OpenAPI    string                               `yaml:"openapi"`
		Paths      map[string]map[string]yaml.Node      `yaml:"paths"`
		Components map[string]map[string]map[string]any `yaml:"components"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Fatalf("openapi %q, want 3.x", doc.OpenAPI)
	}
	type op struct {
		OperationID string           `yaml:"operationId"`
		Role        string           `yaml:"x-sbc-role"`
		Parameters  []map[string]any `yaml:"parameters"`
		Responses   map[string]any   `yaml:"responses"`
	}
	params := func(list []map[string]any) []string {
		var out []string
		for _, p := range list {
			if ref, ok := p["$ref"].(string); ok {
				name := strings.TrimPrefix(ref, "#/components/parameters/")
				p = doc.Components["parameters"][name]
				if p == nil {
					t.Errorf("parameter %s not in components", ref)
					continue
				}
			}
			if p["in"] == "path" {
				out = append(out, p["name"].(string))
			}
		}
		return out
	}
	documented := map[string]string{}
	ids := map[string]bool{}
	for path, item := range doc.Paths {
		var common []map[string]any
		if n, ok := item["parameters"]; ok {
			if err := n.Decode(&common); err != nil {
				t.Fatal(err)
			}
		}
		for method, n := range item {
			if method == "parameters" {
				continue
			}
			var o op
			if err := n.Decode(&o); err != nil {
				t.Fatalf("%s %s: %v", method, path, err)
			}
			pattern := strings.ToUpper(method) + " " + path
			role := o.Role
			if role == "public" {
				role = rolePublic
			} else if role == "" {
				t.Errorf("%s: no x-sbc-role", pattern)
			}
			documented[pattern] = role
			if o.OperationID == "" || ids[o.OperationID] {
				t.Errorf("%s: operationId %q missing or repeated", pattern, o.OperationID)
			}
			ids[o.OperationID] = true
			if len(o.Responses) == 0 {
				t.Errorf("%s: no responses", pattern)
			}
			want := regexp.MustCompile(`\{([a-z]+)\}`).FindAllStringSubmatch(path, -1)
			got := append(params(common), params(o.Parameters)...)
			for _, w := range want {
				if !slices.Contains(got, w[1]) {
					t.Errorf("%s: path parameter %s not described", pattern, w[1])
				}
			}
		}
	}
	served := map[string]bool{}
	for _, rt := range adminRoutes {
		served[rt.pattern] = true
		role, ok := documented[rt.pattern]
		switch {
		case !ok:
			t.Errorf("route %s is not in docs/openapi.yaml", rt.pattern)
		case role != rt.role:
			t.Errorf("%s: x-sbc-role %q, the route table says %q", rt.pattern, role, rt.role)
		}
	}
	for p := range documented {
		if !served[p] {
			t.Errorf("docs/openapi.yaml documents %s, which the SBC does not serve", p)
		}
	}
	for _, m := range regexp.MustCompile(`\$ref: "#/components/([a-zA-Z]+)/([A-Za-z]+)"`).FindAllStringSubmatch(string(b), -1) {
		if doc.Components[m[1]][m[2]] == nil {
			t.Errorf("$ref %s/%s does not resolve", m[1], m[2])
		}
	}
}
