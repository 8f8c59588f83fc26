package longread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	longreadv1 "github.com/longread-dev/longread/client/go/longread/v1"
)

// MaxMessageBytes is the largest message the client sends or accepts (a 1M-token document is
// a few MB of text); the server's own limit is configured separately.
const MaxMessageBytes = 64 << 20

// Client calls the AnalysisService. It is safe for concurrent use.
type Client struct {
	conn    *grpc.ClientConn // nil when the caller owns the connection
	svc     longreadv1.AnalysisServiceClient
	md      metadata.MD
	timeout time.Duration
}

// DefaultServiceConfig is the connection's default service config (used unless the name
// resolver returns one): round_robin over every address the target resolves to (use a
// "dns:///host:port" target for the replicas behind one name), and a retry of UNAVAILABLE (a
// replica gone, draining or refusing), which gRPC makes only while nothing of the response has
// been received: an Estimate or Analyze that got no answer, a Stream before its first message.
// The server closes connections after its maximum connection age; each reconnection resolves
// the name again and picks up new replicas. retryThrottling stops retrying while most calls
// fail, so that an outage is not multiplied. Replace it with WithServiceConfig.
const DefaultServiceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "longread.v1.AnalysisService"}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.2s",
      "maxBackoff": "2s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }],
  "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}`

type options struct {
	apiKey        string
	timeout       time.Duration
	creds         credentials.TransportCredentials
	dialOpts      []grpc.DialOption
	md            metadata.MD
	serviceConfig string
}

// Option configures a Client.
type Option func(*options)

// WithAPIKey sends `authorization: Bearer <key>` with every call.
func WithAPIKey(key string) Option { return func(o *options) { o.apiKey = key } }

// WithTimeout sets the deadline of calls whose context has none (0: no default deadline).
// For Stream and Collect it bounds the whole stream.
func WithTimeout(d time.Duration) Option { return func(o *options) { o.timeout = d } }

// WithTransportCredentials uses TLS (or other credentials); the default is plaintext.
func WithTransportCredentials(c credentials.TransportCredentials) Option {
	return func(o *options) { o.creds = c }
}

// WithDialOptions adds grpc dial options, e.g. an OpenTelemetry stats handler.
func WithDialOptions(opts ...grpc.DialOption) Option {
	return func(o *options) { o.dialOpts = append(o.dialOpts, opts...) }
}

// WithServiceConfig replaces DefaultServiceConfig (JSON, as gRPC's service config); "" leaves
// the connection without one: pick_first and no retries, unless the name resolver gives one.
func WithServiceConfig(json string) Option { return func(o *options) { o.serviceConfig = json } }

// WithMetadata adds fixed metadata (key, value pairs) to every call.
func WithMetadata(kv ...string) Option {
	return func(o *options) { o.md = metadata.Join(o.md, metadata.Pairs(kv...)) }
}

func build(opts []Option) options {
	o := options{serviceConfig: DefaultServiceConfig}
	for _, opt := range opts {
		opt(&o)
	}
	if o.apiKey != "" {
		o.md = metadata.Join(o.md, metadata.Pairs("authorization", "Bearer "+o.apiKey))
	}
	return o
}

// New connects to the server at target ("host:port", or any grpc-go target such as
// "dns:///longread.internal:443"). The connection is made lazily, on the first call.
func New(target string, opts ...Option) (*Client, error) {
	o := build(opts)
	creds := o.creds
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dial := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(MaxMessageBytes), grpc.MaxCallSendMsgSize(MaxMessageBytes),
			// gRPC keeps a request for a retry only up to this size (256 KiB by default):
			// above it the call is committed and a long document would never be retried.
			grpc.MaxRetryRPCBufferSize(MaxMessageBytes)),
	}
	if o.serviceConfig != "" {
		dial = append(dial, grpc.WithDefaultServiceConfig(o.serviceConfig))
	}
	dial = append(dial, o.dialOpts...)
	conn, err := grpc.NewClient(target, dial...)
	if err != nil {
		return nil, fmt.Errorf("longread: %w", err)
	}
	return &Client{conn: conn, svc: longreadv1.NewAnalysisServiceClient(conn), md: o.md, timeout: o.timeout}, nil
}

// NewFromConn wraps a connection the caller owns (Close leaves it open). Dial options given
// here are ignored.
func NewFromConn(conn grpc.ClientConnInterface, opts ...Option) *Client {
	o := build(opts)
	return &Client{svc: longreadv1.NewAnalysisServiceClient(conn), md: o.md, timeout: o.timeout}
}

// Close closes the connection New opened.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

// Generated returns the generated client, for anything this wrapper does not cover. Calls
// made through it carry no API key or default deadline.
func (c *Client) Generated() longreadv1.AnalysisServiceClient { return c.svc }

// prepare adds the client's metadata and, when ctx has no deadline, the default timeout.
func (c *Client) prepare(ctx context.Context) (context.Context, context.CancelFunc) {
	if len(c.md) > 0 {
		for k, vs := range c.md {
			for _, v := range vs {
				ctx = metadata.AppendToOutgoingContext(ctx, k, v)
			}
		}
	}
	if _, has := ctx.Deadline(); !has && c.timeout > 0 {
		return context.WithTimeout(ctx, c.timeout)
	}
	return ctx, func() {}
}

// Estimate plans a job and prices it; it never calls a model.
func (c *Client) Estimate(ctx context.Context, req *longreadv1.EstimateRequest, opts ...grpc.CallOption) (*longreadv1.EstimateResponse, error) {
	ctx, cancel := c.prepare(ctx)
	defer cancel()
	return c.svc.Estimate(ctx, req, opts...)
}

// Analyze runs a job and returns its result.
func (c *Client) Analyze(ctx context.Context, req *longreadv1.AnalyzeRequest, opts ...grpc.CallOption) (*longreadv1.AnalyzeResponse, error) {
	ctx, cancel := c.prepare(ctx)
	defer cancel()
	return c.svc.Analyze(ctx, req, opts...)
}

// Stream starts a job whose events arrive as they happen: first the plan, then chunk and
// delta events, last the result. Cancel ctx to stop it early. Most callers want Collect.
func (c *Client) Stream(ctx context.Context, req *longreadv1.StreamRequest, opts ...grpc.CallOption) (grpc.ServerStreamingClient[longreadv1.StreamResponse], context.CancelFunc, error) {
	ctx, cancel := c.prepare(ctx)
	stream, err := c.svc.Stream(ctx, req, opts...)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	return stream, cancel, nil
}

// StreamResult is a Stream gathered by Collect.
type StreamResult struct {
	// Plan is the first event: the work the job does.
	Plan *longreadv1.Plan
	// Result is the last event: what Analyze would have returned.
	Result *longreadv1.AnalyzeResponse
	// Events holds every event in order, the plan and result included.
	Events []*longreadv1.StreamResponse
}

// ErrNoResult reports a stream that ended without its result event.
var ErrNoResult = errors.New("longread: stream ended without a result")

// Collect runs a Stream to its end, calling onEvent (may be nil) for each event as it
// arrives, and returns the gathered events. An error from onEvent cancels the stream and is
// returned; a failed job returns the gRPC status error (see Details).
func (c *Client) Collect(ctx context.Context, req *longreadv1.StreamRequest, onEvent func(*longreadv1.StreamResponse) error, opts ...grpc.CallOption) (*StreamResult, error) {
	stream, cancel, err := c.Stream(ctx, req, opts...)
	if err != nil {
		return nil, err
	}
	defer cancel()
	return CollectStream(stream, onEvent)
}

// CollectStream gathers an already started stream (e.g. from the generated client).
func CollectStream(stream grpc.ServerStreamingClient[longreadv1.StreamResponse], onEvent func(*longreadv1.StreamResponse) error) (*StreamResult, error) {
	out := &StreamResult{}
	for {
		ev, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return out, err
		}
		out.Events = append(out.Events, ev)
		switch e := ev.GetEvent().(type) {
		case *longreadv1.StreamResponse_Plan:
			out.Plan = e.Plan
		case *longreadv1.StreamResponse_Result:
			out.Result = e.Result
		}
		if onEvent != nil {
			if err := onEvent(ev); err != nil {
				return out, err
			}
		}
	}
	if out.Result == nil {
		return out, ErrNoResult
	}
	return out, nil
}

// Text is a Document holding plain text.
func Text(text string) *longreadv1.Document { return &longreadv1.Document{Text: text} }

// WithTraceparent returns a context whose calls carry the W3C `traceparent` header (and
// `tracestate` when non-empty), so the server's spans join the caller's trace.
func WithTraceparent(ctx context.Context, traceparent, tracestate string) context.Context {
	ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", traceparent)
	if tracestate != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "tracestate", tracestate)
	}
	return ctx
}
