// The install test's program (the same in every language): Estimate, then Stream, of one file.
//
//	go run . TARGET FILE QUESTION     (LONGREAD_API_KEY: the key)
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"
	"unicode/utf8"

	"github.com/longread-dev/longread/client/go/longread"
	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

func main() {
	if len(os.Args) != 4 {
		log.Fatal("usage: consumer TARGET FILE QUESTION")
	}
	target, path, question := os.Args[1], os.Args[2], os.Args[3]
	data, err := os.ReadFile(path)
	if err != nil {
		log.Fatal(err)
	}
	client, err := longread.New(target,
		longread.WithAPIKey(os.Getenv("LONGREAD_API_KEY")), longread.WithTimeout(2*time.Minute))
	if err != nil {
		log.Fatal(err)
	}
	defer client.Close()
	ctx := context.Background()
	doc := longread.Text(string(data))
	chunking := &longreadv1.ChunkingOptions{MaxChunkTokens: 256, Strategy: longreadv1.Strategy_STRATEGY_MAP_REDUCE}
	est, err := client.Estimate(ctx, &longreadv1.EstimateRequest{Document: doc, Instruction: question, Chunking: chunking})
	if err != nil {
		log.Fatal(err)
	}
	fit := 0
	for _, m := range est.GetCandidates() {
		if m.GetFitsSinglePass() {
			fit++
		}
	}
	calls := 0
	res, err := client.Collect(ctx, &longreadv1.StreamRequest{Document: doc, Instruction: question, Chunking: chunking},
		func(ev *longreadv1.StreamResponse) error {
			if ev.GetChunkDone() != nil {
				calls++
			}
			return nil
		})
	if err != nil {
		log.Fatal(err)
	}
	answer := res.Result.GetText()
	fmt.Printf("fit=%d chunks=%d calls=%d answer=%d\n",
		fit, len(est.GetPlan().GetChunks()), calls, utf8.RuneCountInString(answer))
}
