package longread_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// fake is an in-memory AnalysisService that records what the client sent.
type fake struct {
	longreadv1.UnimplementedAnalysisServiceServer
	md       metadata.MD
	deadline bool
}

func (f *fake) Estimate(ctx context.Context, _ *longreadv1.EstimateRequest) (*longreadv1.EstimateResponse, error) {
	f.md, _ = metadata.FromIncomingContext(ctx)
	_, f.deadline = ctx.Deadline()
	st, _ := status.New(codes.ResourceExhausted, "slow down").WithDetails(
		&errdetails.ErrorInfo{Reason: "RATE_LIMITED", Domain: longread.Domain, Metadata: map[string]string{"tenant": "t"}},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
		&errdetails.QuotaFailure{Violations: []*errdetails.QuotaFailure_Violation{{Subject: "tenant:t", Description: "rpm"}}},
	)
	return nil, st.Err()
}

func (f *fake) Analyze(_ context.Context, req *longreadv1.AnalyzeRequest) (*longreadv1.AnalyzeResponse, error) {
	st, _ := status.New(codes.InvalidArgument, "invalid request").WithDetails(
		&errdetails.ErrorInfo{Reason: "INVALID_FIELD", Domain: longread.Domain},
		&errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
			{Field: "generation.temperature", Description: "must be in [0, 2]"}}},
	)
	return nil, st.Err()
}

func (f *fake) Stream(req *longreadv1.StreamRequest, s grpc.ServerStreamingServer[longreadv1.StreamResponse]) error {
	events := []*longreadv1.StreamResponse{
		{Event: &longreadv1.StreamResponse_Plan{Plan: &longreadv1.Plan{DocumentTokens: 7}}},
		{Event: &longreadv1.StreamResponse_Delta{Delta: &longreadv1.Delta{Text: "hel"}}},
		{Event: &longreadv1.StreamResponse_Delta{Delta: &longreadv1.Delta{Text: "lo"}}},
	}
	if req.GetInstruction() != "truncate" {
		events = append(events, &longreadv1.StreamResponse{Event: &longreadv1.StreamResponse_Result{
			Result: &longreadv1.AnalyzeResponse{Text: "hello"}}})
	}
	for _, ev := range events {
		if err := s.Send(ev); err != nil {
			return err
		}
	}
	return nil
}

func start(t *testing.T, opts ...longread.Option) (*fake, *longread.Client) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	f := &fake{}
	longreadv1.RegisterAnalysisServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return f, longread.NewFromConn(conn, opts...)
}

func TestMetadataDeadlineAndRetryDetails(t *testing.T) {
	f, c := start(t, longread.WithAPIKey("k1"), longread.WithTimeout(time.Minute), longread.WithMetadata("x-team", "docs"))
	ctx := longread.WithTraceparent(context.Background(), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "")
	_, err := c.Estimate(ctx, &longreadv1.EstimateRequest{Document: longread.Text("x"), Instruction: "y"})
	if got := f.md.Get("authorization"); len(got) != 1 || got[0] != "Bearer k1" {
		t.Errorf("authorization = %v", got)
	}
	if got := f.md.Get("x-team"); len(got) != 1 || got[0] != "docs" {
		t.Errorf("x-team = %v", got)
	}
	if got := f.md.Get("traceparent"); len(got) != 1 || got[0][:3] != "00-" {
		t.Errorf("traceparent = %v", got)
	}
	if !f.deadline {
		t.Error("the default timeout did not become a deadline")
	}
	d, ok := longread.Details(err)
	if !ok || d.Code != codes.ResourceExhausted || d.Reason != "RATE_LIMITED" || d.Domain != longread.Domain {
		t.Fatalf("details = %+v", d)
	}
	if !d.HasRetryDelay || d.RetryDelay != 1500*time.Millisecond {
		t.Errorf("retry delay = %v (%v)", d.RetryDelay, d.HasRetryDelay)
	}
	if len(d.QuotaViolations) != 1 || d.QuotaViolations[0].Subject != "tenant:t" || d.Metadata["tenant"] != "t" {
		t.Errorf("quota = %+v metadata = %v", d.QuotaViolations, d.Metadata)
	}
}

func TestFieldViolations(t *testing.T) {
	_, c := start(t)
	_, err := c.Analyze(context.Background(), &longreadv1.AnalyzeRequest{})
	d, ok := longread.Details(err)
	if !ok || d.Code != codes.InvalidArgument || len(d.FieldViolations) != 1 ||
		d.FieldViolations[0].Field != "generation.temperature" || d.HasRetryDelay {
		t.Fatalf("details = %+v", d)
	}
	if _, ok := longread.Details(nil); ok {
		t.Error("Details(nil) reported an error")
	}
	if _, ok := longread.Details(errors.New("plain")); ok {
		t.Error("Details(plain error) reported a status")
	}
}

func TestCollect(t *testing.T) {
	_, c := start(t)
	var seen []string
	res, err := c.Collect(context.Background(), &longreadv1.StreamRequest{Instruction: "q"},
		func(ev *longreadv1.StreamResponse) error {
			seen = append(seen, ev.GetDelta().GetText())
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if res.Plan.GetDocumentTokens() != 7 || res.Result.GetText() != "hello" || len(res.Events) != 4 || len(seen) != 4 {
		t.Fatalf("result = %+v, seen = %q", res, seen)
	}

	_, err = c.Collect(context.Background(), &longreadv1.StreamRequest{Instruction: "truncate"}, nil)
	if !errors.Is(err, longread.ErrNoResult) {
		t.Errorf("truncated stream: err = %v", err)
	}

	stop := errors.New("stop")
	res, err = c.Collect(context.Background(), &longreadv1.StreamRequest{Instruction: "q"},
		func(*longreadv1.StreamResponse) error { return stop })
	if !errors.Is(err, stop) || len(res.Events) != 1 {
		t.Errorf("callback error: err = %v, events = %d", err, len(res.Events))
	}
}
