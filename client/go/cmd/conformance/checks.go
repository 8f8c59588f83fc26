package main

import (
	"fmt"
	"math"
	"reflect"
	"regexp"
	"strconv"
	"strings"
)

// The check rules every runner shares (tests/conformance/README.md): paths are dot-separated
// keys, integer segments index lists (negative from the end), "*" maps over a list.

var index = regexp.MustCompile(`^-?\d+$`)

type missing struct{}

func resolve(v any, path string) any {
	if path == "" {
		return v
	}
	return resolveSegs(v, strings.Split(path, "."))
}

func resolveSegs(v any, segs []string) any {
	if len(segs) == 0 {
		return v
	}
	head, rest := segs[0], segs[1:]
	list, isList := v.([]any)
	if head == "*" {
		if !isList {
			return missing{}
		}
		out := []any{}
		for _, item := range list {
			if r := resolveSegs(item, rest); r != (missing{}) {
				out = append(out, r)
			}
		}
		return out
	}
	if isList && index.MatchString(head) {
		i, _ := strconv.Atoi(head)
		if i < 0 {
			i += len(list)
		}
		if i < 0 || i >= len(list) {
			return missing{}
		}
		return resolveSegs(list[i], rest)
	}
	if m, ok := v.(map[string]any); ok {
		if child, ok := m[head]; ok {
			return resolveSegs(child, rest)
		}
	}
	return missing{}
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case int:
		return float64(x), true
	case int64:
		return float64(x), true
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return f, err == nil
	}
	return 0, false
}

func isNumber(v any) bool {
	switch v.(type) {
	case float64, int, int64:
		return true
	}
	return false
}

// equal is JSON equality where a number equals a numeric string (int64 is text in proto JSON).
func equal(a, b any) bool {
	if isNumber(a) || isNumber(b) {
		x, okx := number(a)
		y, oky := number(b)
		return okx && oky && (x == y || math.Abs(x-y) <= 1e-9*math.Max(math.Abs(x), math.Abs(y)))
	}
	am, aok := a.(map[string]any)
	bm, bok := b.(map[string]any)
	if aok && bok {
		if len(am) != len(bm) {
			return false
		}
		for k, v := range am {
			w, ok := bm[k]
			if !ok || !equal(v, w) {
				return false
			}
		}
		return true
	}
	al, aok := a.([]any)
	bl, bok := b.([]any)
	if aok && bok {
		if len(al) != len(bl) {
			return false
		}
		for i := range al {
			if !equal(al[i], bl[i]) {
				return false
			}
		}
		return true
	}
	return reflect.DeepEqual(a, b)
}

func length(v any) (int, bool) {
	switch x := v.(type) {
	case missing:
		return 0, true // proto JSON omits empty repeated fields
	case []any:
		return len(x), true
	case string:
		return len(x), true
	case map[string]any:
		return len(x), true
	}
	return 0, false
}

func short(v any) string {
	if v == (missing{}) {
		return "<missing>"
	}
	s := fmt.Sprintf("%v", v)
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

// check applies one check to a step outcome; "" means it holds.
func check(outcome map[string]any, spec map[string]any, steps map[string]any) string {
	path, _ := spec["path"].(string)
	op, _ := spec["op"].(string)
	actual := resolve(outcome, path)
	expected := spec["value"]
	want := short(expected)
	if ref, ok := spec["ref"].(string); ok {
		id, rest, _ := strings.Cut(ref, ".")
		expected = missing{}
		if s, ok := steps[id]; ok {
			expected = resolve(s, rest)
		}
		if expected == (missing{}) {
			return fmt.Sprintf("%s %s ref %s: the reference is missing", path, op, ref)
		}
		want = "ref " + ref
	}
	var ok bool
	switch op {
	case "present":
		ok = actual != (missing{}) && actual != nil
	case "absent":
		ok = actual == (missing{})
	case "eq":
		ok = actual != (missing{}) && equal(actual, expected)
	case "gt", "ge", "lt":
		x, okx := number(actual)
		y, oky := number(expected)
		ok = okx && oky && ((op == "gt" && x > y) || (op == "ge" && x >= y) || (op == "lt" && x < y))
	case "len_eq", "len_ge":
		n, okn := length(actual)
		w, okw := number(expected)
		ok = okn && okw && ((op == "len_eq" && float64(n) == w) || (op == "len_ge" && float64(n) >= w))
	case "contains":
		if list, isList := actual.([]any); isList {
			for _, v := range list {
				if equal(v, expected) {
					ok = true
					break
				}
			}
		} else {
			s, oks := actual.(string)
			sub, oksub := expected.(string)
			ok = oks && oksub && strings.Contains(s, sub)
		}
	default:
		return fmt.Sprintf("%s: unknown op %q", path, op)
	}
	if ok {
		return ""
	}
	return fmt.Sprintf("%s %s %s: got %s", path, op, want, short(actual))
}
