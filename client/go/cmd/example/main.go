// Command example estimates a file with longread, then streams its analysis, printing
// progress to stderr and the answer to stdout.
//
//	go run ./cmd/example -target localhost:50051 -q "Why was the plant delayed?" report.md
//
// The API key, if the server wants one, comes from LONGREAD_API_KEY.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

func main() {
	target := flag.String("target", "localhost:50051", "longread server")
	question := flag.String("q", "Summarise this document.", "the instruction or question")
	model := flag.String("model", "", "model id (empty: the server's default)")
	timeout := flag.Duration("timeout", 10*time.Minute, "deadline for the whole analysis")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: example [-target host:port] [-q question] [-model id] FILE")
		os.Exit(2)
	}
	text, err := os.ReadFile(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}

	client, err := longread.New(*target,
		longread.WithAPIKey(os.Getenv("LONGREAD_API_KEY")), longread.WithTimeout(*timeout))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()

	// A W3C trace context, so the server's spans join this program's trace.
	traceparent := newTraceparent()
	ctx := longread.WithTraceparent(context.Background(), traceparent, "")
	fmt.Fprintln(os.Stderr, "traceparent:", traceparent)

	doc := longread.Text(string(text))
	sel := &longreadv1.ModelSelection{Model: *model}
	est, err := client.Estimate(ctx, &longreadv1.EstimateRequest{Document: doc, Instruction: *question, Model: sel})
	if err != nil {
		fail(err)
	}
	p := est.GetPlan()
	fmt.Fprintf(os.Stderr, "plan: %s with %s/%s, %d tokens in %d chunk(s), about $%.4f\n",
		p.GetStrategy(), p.GetModel().GetVendor(), p.GetModel().GetModel(), p.GetDocumentTokens(),
		len(p.GetChunks()), p.GetEstimatedCost().GetTotalUsd())

	done := 0
	res, err := client.Collect(ctx, &longreadv1.StreamRequest{Document: doc, Instruction: *question, Model: sel},
		func(ev *longreadv1.StreamResponse) error {
			switch e := ev.GetEvent().(type) {
			case *longreadv1.StreamResponse_ChunkStarted:
				fmt.Fprintf(os.Stderr, "  %s %d/%d started\n", e.ChunkStarted.GetStage(), e.ChunkStarted.GetIndex()+1, e.ChunkStarted.GetOf())
			case *longreadv1.StreamResponse_ChunkDone:
				done++
				fmt.Fprintf(os.Stderr, "  %s chunk %d done (%d calls finished)\n", e.ChunkDone.GetStage(), e.ChunkDone.GetResult().GetIndex(), done)
			case *longreadv1.StreamResponse_Warning:
				fmt.Fprintf(os.Stderr, "  warning %s: %s\n", e.Warning.GetCode(), e.Warning.GetMessage())
			}
			return nil
		})
	if err != nil {
		fail(err)
	}
	r := res.Result
	fmt.Println(r.GetText())
	fmt.Fprintf(os.Stderr, "%s/%s: %d input + %d output tokens in %d call(s), $%.6f, cache %s\n",
		r.GetModel().GetVendor(), r.GetModel().GetModel(), r.GetUsage().GetInputTokens(),
		r.GetUsage().GetOutputTokens(), r.GetUsage().GetCalls(), r.GetCost().GetTotalUsd(), r.GetCacheStatus())
}

// fail prints a gRPC error with its decoded details and exits.
func fail(err error) {
	d, ok := longread.Details(err)
	if !ok {
		log.Fatal(err)
	}
	fmt.Fprintf(os.Stderr, "error: %s %s: %s\n", d.Code, d.Reason, d.Message)
	for _, fv := range d.FieldViolations {
		fmt.Fprintf(os.Stderr, "  %s: %s\n", fv.Field, fv.Description)
	}
	if d.HasRetryDelay {
		fmt.Fprintf(os.Stderr, "  retry after %s\n", d.RetryDelay)
	}
	os.Exit(1)
}

func newTraceparent() string {
	var b [24]byte
	if _, err := rand.Read(b[:]); err != nil {
		log.Fatal(err)
	}
	return "00-" + hex.EncodeToString(b[:16]) + "-" + hex.EncodeToString(b[16:]) + "-01"
}
