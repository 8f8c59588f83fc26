import type { MessageInitShape } from "@bufbuild/protobuf";
import { createClient, type Client, type Interceptor, type Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  Http2SessionManager,
  type ConnectTransportOptions,
  type GrpcTransportOptions,
} from "@connectrpc/connect-node";
import {
  AnalysisService,
  type AnalyzeRequestSchema,
  type AnalyzeResponse,
  type EstimateRequestSchema,
  type EstimateResponse,
  type StreamRequestSchema,
  type StreamResponse,
} from "./gen/longread/v1/analysis_service_pb.js";
import type { DocumentSchema, Plan } from "./gen/longread/v1/types_pb.js";
import { DEFAULT_RETRY_POLICY, type RetryPolicy, retryInterceptor } from "./retry.js";

/** An EstimateRequest as a plain object (every field optional). */
export type EstimateRequestInit = MessageInitShape<typeof EstimateRequestSchema>;
/** An AnalyzeRequest as a plain object (every field optional). */
export type AnalyzeRequestInit = MessageInitShape<typeof AnalyzeRequestSchema>;
/** A StreamRequest as a plain object (every field optional). */
export type StreamRequestInit = MessageInitShape<typeof StreamRequestSchema>;

/** The largest message the client accepts (a 1M-token document is a few MB of text). */
export const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

export interface ClientOptions {
  /**
   * The server: "http://host:port" (plaintext), "https://host:port" (TLS), or a bare
   * "host:port", which means plaintext.
   */
  target: string;
  /** Sent as `authorization: Bearer <key>` with every call. */
  apiKey?: string;
  /** Deadline of calls that set none, in milliseconds (for streams: the whole stream). */
  timeoutMs?: number;
  /** Fixed headers (gRPC metadata) for every call. */
  headers?: Record<string, string>;
  /** More Connect interceptors (logging, OpenTelemetry...), run after the auth one. */
  interceptors?: Interceptor[];
  /**
   * The protocol: "grpc" (the default; HTTP/2 to the gRPC listener) or "connect" (the Connect
   * protocol over HTTP/1.1 to the gateway's HTTP listener, `[http] listen`, for networks that
   * pass HTTP/1.1 only). The same calls, errors and details either way.
   */
  transport?: "grpc" | "connect";
  /** With `transport: "connect"`: JSON bodies instead of binary protobuf. */
  json?: boolean;
  /**
   * Options passed to the transport (TLS settings in `nodeOptions`, keepalive...): to
   * createGrpcTransport, or to createConnectTransport for `transport: "connect"`.
   */
  transportOptions?: Partial<GrpcTransportOptions>;
  /**
   * Retries of UNAVAILABLE before anything of the response has arrived (`retry.ts`);
   * `false`: none. Default: DEFAULT_RETRY_POLICY, the other clients' service config.
   */
  retry?: RetryPolicy | false;
}

export interface CallOptions {
  /** Deadline of this call in milliseconds (overrides the client's `timeoutMs`). */
  timeoutMs?: number;
  /** Cancels the call. */
  signal?: AbortSignal;
  /** Extra headers (gRPC metadata) for this call. */
  headers?: Record<string, string>;
  /** W3C trace context, so the server's spans join the caller's trace. */
  traceparent?: string;
  /** W3C trace state, sent with `traceparent`. */
  tracestate?: string;
}

/** A Stream gathered by `collect`. */
export interface StreamResult {
  /** The first event: the work the job does. */
  plan?: Plan;
  /** The last event: what Analyze would have returned. */
  result: AnalyzeResponse;
  /** Every event in order, the plan and result included. */
  events: StreamResponse[];
}

/** A Document holding plain text. */
export function text(value: string): MessageInitShape<typeof DocumentSchema> {
  return { text: value };
}

function baseUrl(target: string): string {
  return /^https?:\/\//.test(target) ? target : `http://${target}`;
}

/**
 * A longread client over Connect's gRPC transport for Node (HTTP/2), or its Connect transport
 * (HTTP/1.1) with `transport: "connect"`. Promise-based unary calls, async-iterable streams,
 * deadlines in milliseconds and AbortSignal cancellation. `service` is the generated API for
 * anything this wrapper does not cover.
 */
export class LongreadClient {
  /** The generated client (calls through it carry the API key and fixed headers too). */
  readonly service: Client<typeof AnalysisService>;
  private readonly sessions?: Http2SessionManager;
  private readonly timeoutMs?: number;

  constructor(options: ClientOptions) {
    const url = baseUrl(options.target);
    const fixed: Record<string, string> = { ...options.headers };
    if (options.apiKey) {
      fixed["authorization"] = `Bearer ${options.apiKey}`;
    }
    const auth: Interceptor = (next) => (req) => {
      for (const [k, v] of Object.entries(fixed)) {
        if (!req.header.has(k)) {
          req.header.set(k, v);
        }
      }
      return next(req);
    };
    const common = {
      readMaxBytes: MAX_MESSAGE_BYTES,
      writeMaxBytes: MAX_MESSAGE_BYTES,
      ...options.transportOptions,
      baseUrl: url,
      interceptors: [
        ...(options.retry === false ? [] : [retryInterceptor(options.retry ?? DEFAULT_RETRY_POLICY)]),
        auth,
        ...(options.interceptors ?? []),
        ...(options.transportOptions?.interceptors ?? []),
      ],
    };
    let transport: Transport;
    if (options.transport === "connect") {
      const { nodeOptions, sessionManager: _unused, ...rest } = common;
      transport = createConnectTransport({
        ...rest,
        httpVersion: "1.1",
        useBinaryFormat: !options.json,
        // HTTP/1.1 request options: the TLS settings (ca, cert, key, servername...) have the
        // same names as for an HTTP/2 session.
        nodeOptions: nodeOptions as Extract<ConnectTransportOptions, { httpVersion: "1.1" }>["nodeOptions"],
      });
    } else {
      this.sessions = new Http2SessionManager(url, undefined, options.transportOptions?.nodeOptions);
      transport = createGrpcTransport({ ...common, sessionManager: this.sessions });
    }
    this.service = createClient(AnalysisService, transport);
    this.timeoutMs = options.timeoutMs;
  }

  private callOptions(call: CallOptions = {}) {
    const headers: Record<string, string> = { ...call.headers };
    if (call.traceparent) {
      headers["traceparent"] = call.traceparent;
      if (call.tracestate) {
        headers["tracestate"] = call.tracestate;
      }
    }
    return { timeoutMs: call.timeoutMs ?? this.timeoutMs, signal: call.signal, headers };
  }

  /** Plans a job and prices it; never calls a model. */
  estimate(request: EstimateRequestInit, call?: CallOptions): Promise<EstimateResponse> {
    return this.service.estimate(request, this.callOptions(call));
  }

  /** Runs a job and returns its result. */
  analyze(request: AnalyzeRequestInit, call?: CallOptions): Promise<AnalyzeResponse> {
    return this.service.analyze(request, this.callOptions(call));
  }

  /**
   * Runs a job, yielding its events as they happen: the plan first, then chunk and delta
   * events, the result last. Breaking out of the loop cancels the call.
   */
  stream(request: StreamRequestInit, call?: CallOptions): AsyncIterable<StreamResponse> {
    return this.service.stream(request, this.callOptions(call));
  }

  /**
   * Runs a Stream to its end and gathers it, calling `onEvent` for each event as it arrives
   * (progress bars, printing tokens). Rejects with the ConnectError of a failed job (see
   * `errorDetails`), or an Error when the stream ends without its result.
   */
  async collect(
    request: StreamRequestInit,
    call: CallOptions & { onEvent?: (event: StreamResponse) => void } = {},
  ): Promise<StreamResult> {
    const events: StreamResponse[] = [];
    let plan: Plan | undefined;
    let result: AnalyzeResponse | undefined;
    for await (const event of this.stream(request, call)) {
      events.push(event);
      if (event.event.case === "plan") {
        plan = event.event.value;
      } else if (event.event.case === "result") {
        result = event.event.value;
      }
      call.onEvent?.(event);
    }
    if (!result) {
      throw new Error("longread: stream ended without a result");
    }
    return { plan, result, events };
  }

  /** Closes the HTTP/2 connection (the Connect transport's HTTP/1.1 ones close when idle). */
  close(): void {
    this.sessions?.abort();
  }
}
