package longread_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// flaky fails the first attempt of each Estimate with UNAVAILABLE, as a replica going away.
type flaky struct {
	longreadv1.UnimplementedAnalysisServiceServer
	attempts atomic.Int32
}

func (f *flaky) Estimate(context.Context, *longreadv1.EstimateRequest) (*longreadv1.EstimateResponse, error) {
	if f.attempts.Add(1) == 1 {
		return nil, status.Error(codes.Unavailable, "replica going away")
	}
	return &longreadv1.EstimateResponse{}, nil
}

func serveFlaky(t *testing.T) (*flaky, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	f := &flaky{}
	longreadv1.RegisterAnalysisServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return f, "dns:///" + lis.Addr().String()
}

// The default service config retries UNAVAILABLE; without one the first failure is final.
func TestDefaultServiceConfigRetriesUnavailable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		opts     []longread.Option
		attempts int32
		code     codes.Code
	}{
		{"default", nil, 2, codes.OK},
		{"none", []longread.Option{longread.WithServiceConfig("")}, 1, codes.Unavailable},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, target := serveFlaky(t)
			c, err := longread.New(target, append(tc.opts, longread.WithTimeout(10*time.Second))...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			_, err = c.Estimate(context.Background(), &longreadv1.EstimateRequest{})
			if got := status.Code(err); got != tc.code {
				t.Fatalf("code %v, want %v (%v)", got, tc.code, err)
			}
			if got := f.attempts.Load(); got != tc.attempts {
				t.Fatalf("%d attempts, want %d", got, tc.attempts)
			}
		})
	}
}
