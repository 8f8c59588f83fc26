// Command conformance runs the language-neutral conformance cases (tests/conformance/cases)
// with the Go client against a live server, printing one JSON line per case.
//
//	CONFORMANCE_KEY_VALID=... conformance --target 127.0.0.1:50051 --cases ../../tests/conformance/cases
//
// The case format and the check rules are described in tests/conformance/README.md.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

const defaultDeadlineMS = 30_000

type step struct {
	ID               string          `json:"id"`
	RPC              string          `json:"rpc"`
	Auth             string          `json:"auth"`
	DeadlineMS       int             `json:"deadline_ms"`
	RepeatUntilError int             `json:"repeat_until_error"`
	Request          json.RawMessage `json:"request"`
	Expect           struct {
		Code   string           `json:"code"`
		Checks []map[string]any `json:"checks"`
	} `json:"expect"`
}

type testCase struct {
	Name  string `json:"name"`
	Steps []step `json:"steps"`
}

type runner struct {
	target  string
	clients map[string]*longread.Client
}

func (r *runner) client(auth string) (*longread.Client, error) {
	if c, ok := r.clients[auth]; ok {
		return c, nil
	}
	var opts []longread.Option
	if auth != "none" {
		name := "CONFORMANCE_KEY_" + strings.ToUpper(auth)
		key := os.Getenv(name)
		if key == "" {
			return nil, fmt.Errorf("%s is not set", name)
		}
		opts = append(opts, longread.WithAPIKey(key))
	}
	c, err := longread.New(r.target, opts...)
	if err != nil {
		return nil, err
	}
	r.clients[auth] = c
	return c, nil
}

// toJSON renders a message as generic JSON with proto field names, like every runner does.
func toJSON(m proto.Message) any {
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		panic(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		panic(err)
	}
	return v
}

var codeNames = map[codes.Code]string{
	codes.OK: "OK", codes.Canceled: "CANCELLED", codes.Unknown: "UNKNOWN",
	codes.InvalidArgument: "INVALID_ARGUMENT", codes.DeadlineExceeded: "DEADLINE_EXCEEDED",
	codes.NotFound: "NOT_FOUND", codes.AlreadyExists: "ALREADY_EXISTS",
	codes.PermissionDenied: "PERMISSION_DENIED", codes.ResourceExhausted: "RESOURCE_EXHAUSTED",
	codes.FailedPrecondition: "FAILED_PRECONDITION", codes.Aborted: "ABORTED",
	codes.OutOfRange: "OUT_OF_RANGE", codes.Unimplemented: "UNIMPLEMENTED",
	codes.Internal: "INTERNAL", codes.Unavailable: "UNAVAILABLE", codes.DataLoss: "DATA_LOSS",
	codes.Unauthenticated: "UNAUTHENTICATED",
}

func errorJSON(err error) (string, map[string]any) {
	d, ok := longread.Details(err)
	if !ok {
		return "UNKNOWN", map[string]any{"message": err.Error()}
	}
	fvs := []any{}
	for _, fv := range d.FieldViolations {
		fvs = append(fvs, map[string]any{"field": fv.Field, "description": fv.Description})
	}
	qvs := []any{}
	for _, qv := range d.QuotaViolations {
		qvs = append(qvs, map[string]any{"subject": qv.Subject, "description": qv.Description})
	}
	md := map[string]any{}
	for k, v := range d.Metadata {
		md[k] = v
	}
	out := map[string]any{
		"message": d.Message, "reason": d.Reason, "domain": d.Domain, "metadata": md,
		"field_violations": fvs, "quota_violations": qvs,
	}
	if d.HasRetryDelay {
		out["retry_delay_s"] = d.RetryDelay.Seconds()
	}
	return codeNames[d.Code], out
}

func (r *runner) call(s step) (map[string]any, error) {
	auth := s.Auth
	if auth == "" {
		auth = "valid"
	}
	c, err := r.client(auth)
	if err != nil {
		return nil, err
	}
	deadline := s.DeadlineMS
	if deadline == 0 {
		deadline = defaultDeadlineMS
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(deadline)*time.Millisecond)
	defer cancel()
	out := map[string]any{"code": "OK"}
	start := time.Now()
	var callErr error
	switch s.RPC {
	case "Estimate":
		req := &longreadv1.EstimateRequest{}
		if err := protojson.Unmarshal(s.Request, req); err != nil {
			return nil, err
		}
		var resp *longreadv1.EstimateResponse
		if resp, callErr = c.Estimate(ctx, req); callErr == nil {
			out["response"] = toJSON(resp)
		}
	case "Analyze":
		req := &longreadv1.AnalyzeRequest{}
		if err := protojson.Unmarshal(s.Request, req); err != nil {
			return nil, err
		}
		var resp *longreadv1.AnalyzeResponse
		if resp, callErr = c.Analyze(ctx, req); callErr == nil {
			out["response"] = toJSON(resp)
		}
	case "Stream":
		req := &longreadv1.StreamRequest{}
		if err := protojson.Unmarshal(s.Request, req); err != nil {
			return nil, err
		}
		events := []any{}
		_, callErr = c.Collect(ctx, req, func(ev *longreadv1.StreamResponse) error {
			events = append(events, toJSON(ev))
			return nil
		})
		out["events"] = events
	default:
		return nil, fmt.Errorf("unknown rpc %q", s.RPC)
	}
	if callErr != nil {
		out["code"], out["error"] = errorJSON(callErr)
	}
	out["elapsed_ms"] = float64(time.Since(start).Microseconds()) / 1000
	return out, nil
}

func (r *runner) runCase(tc testCase) []string {
	failures := []string{}
	outcomes := map[string]any{}
	for i, s := range tc.Steps {
		id := s.ID
		if id == "" {
			id = fmt.Sprintf("step%d", i)
		}
		var out map[string]any
		var err error
		for attempt := 1; ; attempt++ {
			if out, err = r.call(s); err != nil {
				break
			}
			if out["code"] != "OK" || attempt >= max(s.RepeatUntilError, 1) {
				out["attempts"] = attempt
				break
			}
		}
		if err != nil {
			failures = append(failures, fmt.Sprintf("%s: %v", id, err))
			continue
		}
		outcomes[id] = out
		want := s.Expect.Code
		if want == "" {
			want = "OK"
		}
		if out["code"] != want {
			msg := ""
			if e, ok := out["error"].(map[string]any); ok {
				msg, _ = e["message"].(string)
			}
			failures = append(failures, fmt.Sprintf("%s: code %v (%s), want %s", id, out["code"], msg, want))
			continue
		}
		for _, spec := range s.Expect.Checks {
			if f := check(out, spec, outcomes); f != "" {
				failures = append(failures, id+": "+f)
			}
		}
	}
	return failures
}

func loadCases(dir, nonce string) ([]testCase, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(paths)
	var cases []testCase
	for _, p := range paths {
		raw, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		var head testCase
		if err := json.Unmarshal(raw, &head); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		text := strings.ReplaceAll(string(raw), "{{nonce}}", nonce+"-"+head.Name)
		var tc testCase
		if err := json.Unmarshal([]byte(text), &tc); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		cases = append(cases, tc)
	}
	return cases, nil
}

type caseList []string

func (c *caseList) String() string     { return strings.Join(*c, ",") }
func (c *caseList) Set(v string) error { *c = append(*c, v); return nil }

func main() {
	target := flag.String("target", "127.0.0.1:50051", "server address")
	dir := flag.String("cases", "tests/conformance/cases", "directory of case files")
	nonce := flag.String("nonce", fmt.Sprint(time.Now().UnixNano()), "makes documents unique to this run")
	var only caseList
	flag.Var(&only, "case", "run only this case (repeatable)")
	flag.Parse()

	cases, err := loadCases(*dir, *nonce)
	if err != nil {
		fmt.Fprintln(os.Stderr, "conformance:", err)
		os.Exit(2)
	}
	r := &runner{target: *target, clients: map[string]*longread.Client{}}
	allOK := true
	for _, tc := range cases {
		if len(only) > 0 && !contains(only, tc.Name) {
			continue
		}
		start := time.Now()
		failures := r.runCase(tc)
		allOK = allOK && len(failures) == 0
		line, _ := json.Marshal(map[string]any{
			"case": tc.Name, "ok": len(failures) == 0, "failures": failures,
			"ms": time.Since(start).Milliseconds(),
		})
		fmt.Println(string(line))
	}
	for _, c := range r.clients {
		_ = c.Close()
	}
	if !allOK {
		os.Exit(1)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
