import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { createAsyncIterable } from "@connectrpc/connect/protocol";

/**
 * What the other clients' default gRPC service config does, for Connect's transport, which
 * reads no service config: retry UNAVAILABLE (a replica gone, draining or refusing) while
 * nothing of the response has been received — an Estimate or Analyze that got no answer, a
 * Stream before its first message — with exponential backoff, within the call's deadline,
 * never when the server's pushback says not to, and stop retrying while most calls fail
 * (gRPC's retryThrottling), so that an outage is not multiplied.
 */
export interface RetryPolicy {
  /** Attempts in all, the first included (1: no retry). */
  maxAttempts: number;
  initialBackoffMs: number;
  maxBackoffMs: number;
  backoffMultiplier: number;
  retryableCodes: Code[];
  /** gRPC's retryThrottling: a failure costs a token, a success gives back `tokenRatio`; no
   * retry while at most half of `maxTokens` are left. */
  maxTokens: number;
  tokenRatio: number;
}

/** The same values as the Python, Go and Java clients' DEFAULT_SERVICE_CONFIG. */
export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 3,
  initialBackoffMs: 200,
  maxBackoffMs: 2000,
  backoffMultiplier: 2,
  retryableCodes: [Code.Unavailable],
  maxTokens: 10,
  tokenRatio: 0.1,
};

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(done, ms);
    function done() {
      signal.removeEventListener("abort", aborted);
      resolve();
    }
    function aborted() {
      clearTimeout(timer);
      reject(signal.reason);
    }
    signal.addEventListener("abort", aborted, { once: true });
  });
}

/** An interceptor that retries as `policy` says (one throttle per interceptor: per client). */
export function retryInterceptor(policy: RetryPolicy = DEFAULT_RETRY_POLICY): Interceptor {
  let tokens = policy.maxTokens;
  const failed = () => {
    tokens = Math.max(0, tokens - 1);
  };
  const succeeded = () => {
    tokens = Math.min(policy.maxTokens, tokens + policy.tokenRatio);
  };
  return (next) => async (req) => {
    // A request stream can be read once: keep its messages for the retries.
    const messages = req.stream ? await collect(req.message) : undefined;
    let backoff = policy.initialBackoffMs;
    for (let attempt = 1; ; attempt++) {
      const attemptReq = req.stream && messages ? { ...req, message: createAsyncIterable(messages) } : req;
      try {
        const res = await next(attemptReq);
        if (!res.stream) {
          succeeded();
          return res;
        }
        // Committed once the first message (or the end) arrives: wait for it here, where a
        // failure can still be retried.
        const it = res.message[Symbol.asyncIterator]();
        const first = await it.next();
        succeeded();
        async function* rest() {
          if (first.done) {
            return;
          }
          yield first.value;
          for (let r = await it.next(); !r.done; r = await it.next()) {
            yield r.value;
          }
        }
        return { ...res, message: rest() };
      } catch (err) {
        const cerr = ConnectError.from(err);
        if (!policy.retryableCodes.includes(cerr.code)) {
          throw err;
        }
        failed();
        if (attempt >= policy.maxAttempts || tokens <= policy.maxTokens / 2) {
          throw err;
        }
        // gRPC's server pushback: a negative value means "do not retry" (the gateway says so
        // of failures every replica would meet: an upstream down, shared state unavailable).
        const pushback = cerr.metadata.get("grpc-retry-pushback-ms");
        if (pushback !== null && !(Number(pushback) >= 0)) {
          throw err;
        }
        // Full jitter, as gRPC: a random wait up to the current backoff.
        await sleep(Math.random() * backoff, req.signal);
        backoff = Math.min(policy.maxBackoffMs, backoff * policy.backoffMultiplier);
      }
    }
  };
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const m of it) {
    out.push(m);
  }
  return out;
}
