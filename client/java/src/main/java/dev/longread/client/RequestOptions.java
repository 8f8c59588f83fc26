package dev.longread.client;

import java.time.Duration;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * Per-call options: a deadline, W3C trace context and extra metadata. Immutable; each
 * {@code with} method returns a copy.
 *
 * @param timeout the call's deadline (null: the client's default); for streams, the whole stream
 * @param traceparent the W3C {@code traceparent} header (null: none), so the server's spans join
 *     the caller's trace
 * @param tracestate the W3C {@code tracestate} header (null: none)
 * @param headers extra metadata for this call
 */
public record RequestOptions(
    Duration timeout, String traceparent, String tracestate, Map<String, String> headers) {

  /** No deadline override, no trace context, no extra metadata. */
  public static final RequestOptions DEFAULT = new RequestOptions(null, null, null, Map.of());

  public RequestOptions {
    headers = Map.copyOf(headers);
  }

  /** A copy with this deadline. */
  public RequestOptions withTimeout(Duration value) {
    return new RequestOptions(value, traceparent, tracestate, headers);
  }

  /** A copy that sends this {@code traceparent} (and {@code tracestate}, when not null). */
  public RequestOptions withTraceparent(String value, String state) {
    return new RequestOptions(timeout, value, state, headers);
  }

  /** A copy with one more metadata entry. */
  public RequestOptions withHeader(String key, String value) {
    Map<String, String> copy = new LinkedHashMap<>(headers);
    copy.put(key, value);
    return new RequestOptions(timeout, traceparent, tracestate, copy);
  }
}
