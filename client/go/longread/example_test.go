package longread_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// Estimate a document's tokens, chunk plan and cost without calling a model.
func ExampleClient_Estimate() {
	c, err := longread.New("localhost:50051", longread.WithAPIKey("lr-..."), longread.WithTimeout(30*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	est, err := c.Estimate(context.Background(), &longreadv1.EstimateRequest{
		Document:    &longreadv1.Document{Text: "The tide turns at four."},
		Instruction: "When does the tide turn?",
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(est.GetPlan().GetDocumentTokens(), est.GetPlan().GetStrategy())
}

// Stream a long analysis: the plan, per-chunk progress and the answer as it is written.
func ExampleClient_Collect() {
	c, err := longread.New("localhost:50051", longread.WithAPIKey("lr-..."))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	req := &longreadv1.StreamRequest{
		Document:    &longreadv1.Document{Text: "…a long report…"},
		Instruction: "What caused the delay?",
	}
	res, err := c.Collect(context.Background(), req, func(ev *longreadv1.StreamResponse) error {
		if d := ev.GetDelta(); d != nil {
			fmt.Print(d.GetText())
		}
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println()
	fmt.Println(res.Result.GetCost().GetTotalUsd())
}

// Decide what to do with a failed call from its reason and details.
func ExampleDetails() {
	// What the server sends when a tenant is over its rate limit.
	st, _ := status.New(codes.ResourceExhausted, "tenant acme: 60 requests per minute").WithDetails(
		&errdetails.ErrorInfo{Reason: longread.ReasonRateLimited, Domain: longread.Domain},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(1500 * time.Millisecond)},
	)
	var err error = st.Err()

	if d, ok := longread.Details(err); ok && d.Is(longread.ReasonRateLimited) && d.HasRetryDelay {
		fmt.Println("rate limited, retry after", d.RetryDelay)
	}
	fmt.Println(errors.Is(err, context.Canceled))
	// Output:
	// rate limited, retry after 1.5s
	// false
}
