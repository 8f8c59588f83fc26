// Package longread is a small Go client for longread, the gRPC service that has long
// documents analysed by LLMs: it plans the work (tokens, chunks, model fit, cost), runs it
// against LLM vendors and streams partial results while it works.
//
// The generated API lives in [longreadv1] (package
// github.com/longread-dev/longread/client/go/longread/v1) and can be used as is: this package
// only adds what the generated API makes awkward:
//
//   - [New] dials the server and attaches the API key (`authorization: Bearer <key>`) and any
//     fixed metadata to every call;
//   - a default deadline ([WithTimeout]) for calls whose context has none;
//   - [Client.Collect] runs a Stream and gathers it into the result Analyze would return,
//     calling back for each event (progress bars, printing tokens as they arrive);
//   - [Details] decodes the google.rpc error details every failure carries (ErrorInfo,
//     BadRequest field violations, RetryInfo, QuotaFailure);
//   - [WithTraceparent] passes a W3C trace context so the server's spans join the caller's
//     trace (with OpenTelemetry, prefer otelgrpc's client stats handler via [WithDialOptions]).
//
// A minimal program:
//
//	c, err := longread.New("localhost:50051", longread.WithAPIKey(os.Getenv("LONGREAD_API_KEY")))
//	if err != nil { ... }
//	defer c.Close()
//	res, err := c.Analyze(ctx, &longreadv1.AnalyzeRequest{
//		Document:    longread.Text(report),
//		Instruction: "Why was the Northfield plant delayed?",
//	})
//	if d, ok := longread.Details(err); ok {
//		log.Printf("%s %s: %v", d.Code, d.Reason, d.FieldViolations)
//	}
package longread
