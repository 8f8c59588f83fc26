package dev.longread.client;

import dev.longread.v1.AnalysisServiceGrpc;
import dev.longread.v1.AnalyzeRequest;
import dev.longread.v1.AnalyzeResponse;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.EstimateResponse;
import dev.longread.v1.Plan;
import dev.longread.v1.StreamRequest;
import dev.longread.v1.StreamResponse;
import io.grpc.ClientInterceptor;
import io.grpc.Context;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Metadata;
import io.grpc.stub.AbstractStub;
import io.grpc.stub.MetadataUtils;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.TimeUnit;
import java.util.function.Consumer;

/**
 * Blocking client for the AnalysisService. Thread-safe; close it to shut its channel down.
 *
 * <p>Failures are {@link io.grpc.StatusRuntimeException}s; {@link ErrorDetails#from} decodes
 * their details.
 */
public final class LongreadClient implements AutoCloseable {
  /** The largest message the client accepts (a 1M-token document is a few MB of text). */
  public static final int MAX_MESSAGE_BYTES = 64 * 1024 * 1024;

  /**
   * The channel's default service config (used unless the name resolver returns one):
   * round_robin over every address the target resolves to (use a {@code dns:///host:port}
   * target for the replicas behind one name), and a retry of UNAVAILABLE (a replica gone,
   * draining or refusing), which gRPC makes only while nothing of the response has been
   * received: an Estimate or Analyze that got no answer, a Stream before its first message. The
   * server closes connections after its maximum connection age; each reconnection resolves the
   * name again and picks up new replicas. {@code retryThrottling} stops retrying while most calls
   * fail, so that an outage is not multiplied. Numbers are doubles, as gRPC's JSON parser gives
   * them. Replace it with {@link Builder#serviceConfig}.
   */
  public static final Map<String, ?> DEFAULT_SERVICE_CONFIG =
      Map.of(
          "loadBalancingConfig",
          List.of(Map.of("round_robin", Map.of())),
          "methodConfig",
          List.of(
              Map.of(
                  "name",
                  List.of(Map.of("service", "longread.v1.AnalysisService")),
                  "retryPolicy",
                  Map.of(
                      "maxAttempts", 3.0,
                      "initialBackoff", "0.2s",
                      "maxBackoff", "2s",
                      "backoffMultiplier", 2.0,
                      "retryableStatusCodes", List.of("UNAVAILABLE")))),
          "retryThrottling",
          Map.of("maxTokens", 10.0, "tokenRatio", 0.1));

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  private final ManagedChannel ownedChannel;
  private final AnalysisServiceGrpc.AnalysisServiceBlockingStub blocking;
  private final AnalysisServiceGrpc.AnalysisServiceFutureStub future;
  private final AnalysisServiceGrpc.AnalysisServiceStub async;
  private final Duration timeout;

  private LongreadClient(Builder b) {
    io.grpc.Channel channel = b.channel;
    if (channel == null) {
      ManagedChannelBuilder<?> mcb =
          ManagedChannelBuilder.forTarget(b.target).maxInboundMessageSize(MAX_MESSAGE_BYTES);
      if (b.serviceConfig != null) {
        // gRPC keeps a request for a retry only up to perRpcBufferLimit (1 MiB by default):
        // above it the call is committed and a long document would never be retried.
        mcb.defaultServiceConfig(b.serviceConfig)
            .enableRetry()
            .perRpcBufferLimit(MAX_MESSAGE_BYTES)
            .retryBufferSize(2L * MAX_MESSAGE_BYTES);
      } else {
        mcb.disableRetry();
      }
      if (b.plaintext) {
        mcb.usePlaintext();
      } else {
        mcb.useTransportSecurity();
      }
      ownedChannel = mcb.build();
      channel = ownedChannel;
    } else {
      ownedChannel = null;
    }
    Metadata fixed = new Metadata();
    b.headers.forEach((k, v) -> fixed.put(Metadata.Key.of(k, Metadata.ASCII_STRING_MARSHALLER), v));
    if (b.apiKey != null && !b.apiKey.isEmpty()) {
      fixed.put(AUTHORIZATION, "Bearer " + b.apiKey);
    }
    List<ClientInterceptor> interceptors = new ArrayList<>(b.interceptors);
    interceptors.add(MetadataUtils.newAttachHeadersInterceptor(fixed));
    ClientInterceptor[] all = interceptors.toArray(new ClientInterceptor[0]);
    blocking = AnalysisServiceGrpc.newBlockingStub(channel).withInterceptors(all);
    future = AnalysisServiceGrpc.newFutureStub(channel).withInterceptors(all);
    async = AnalysisServiceGrpc.newStub(channel).withInterceptors(all);
    timeout = b.timeout;
  }

  /** A builder for a client of the server at {@code target} ("host:port", or a gRPC target URI). */
  public static Builder builder(String target) {
    return new Builder(Objects.requireNonNull(target));
  }

  /** A builder for a client over a channel the caller owns ({@link #close} leaves it open). */
  public static Builder builder(io.grpc.Channel channel) {
    Builder b = new Builder(null);
    b.channel = Objects.requireNonNull(channel);
    return b;
  }

  /** The generated blocking stub, with the API key and fixed metadata but no deadline. */
  public AnalysisServiceGrpc.AnalysisServiceBlockingStub blockingStub() {
    return blocking;
  }

  /** The generated future stub, with the API key and fixed metadata but no deadline. */
  public AnalysisServiceGrpc.AnalysisServiceFutureStub futureStub() {
    return future;
  }

  /** The generated async stub, with the API key and fixed metadata but no deadline. */
  public AnalysisServiceGrpc.AnalysisServiceStub asyncStub() {
    return async;
  }

  private <S extends AbstractStub<S>> S prepare(S stub, RequestOptions options) {
    Duration d = options.timeout() != null ? options.timeout() : timeout;
    if (d != null) {
      stub = stub.withDeadlineAfter(d.toNanos(), TimeUnit.NANOSECONDS);
    }
    Metadata md = new Metadata();
    options.headers().forEach((k, v) -> md.put(Metadata.Key.of(k, Metadata.ASCII_STRING_MARSHALLER), v));
    if (options.traceparent() != null) {
      md.put(Metadata.Key.of("traceparent", Metadata.ASCII_STRING_MARSHALLER), options.traceparent());
      if (options.tracestate() != null) {
        md.put(Metadata.Key.of("tracestate", Metadata.ASCII_STRING_MARSHALLER), options.tracestate());
      }
    }
    if (md.keys().isEmpty()) {
      return stub;
    }
    return stub.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
  }

  /** Plans a job and prices it; never calls a model. */
  public EstimateResponse estimate(EstimateRequest request) {
    return estimate(request, RequestOptions.DEFAULT);
  }

  /** Plans a job and prices it, with per-call options. */
  public EstimateResponse estimate(EstimateRequest request, RequestOptions options) {
    return prepare(blocking, options).estimate(request);
  }

  /** Runs a job and returns its result. */
  public AnalyzeResponse analyze(AnalyzeRequest request) {
    return analyze(request, RequestOptions.DEFAULT);
  }

  /** Runs a job and returns its result, with per-call options. */
  public AnalyzeResponse analyze(AnalyzeRequest request, RequestOptions options) {
    return prepare(blocking, options).analyze(request);
  }

  /**
   * Starts a job whose events arrive as they happen: the plan first, then chunk and delta events,
   * the result last. Read the iterator to its end; to stop early, run the call inside a
   * {@link io.grpc.Context.CancellableContext} and cancel it. Most callers want {@link #collect}.
   */
  public Iterator<StreamResponse> stream(StreamRequest request, RequestOptions options) {
    return prepare(blocking, options).stream(request);
  }

  /** {@link #stream(StreamRequest, RequestOptions)} with default options. */
  public Iterator<StreamResponse> stream(StreamRequest request) {
    return stream(request, RequestOptions.DEFAULT);
  }

  /** {@link #collect(StreamRequest, RequestOptions, Consumer)} with default options. */
  public StreamResult collect(StreamRequest request, Consumer<StreamResponse> onEvent) {
    return collect(request, RequestOptions.DEFAULT, onEvent);
  }

  /**
   * Runs a Stream to its end, calling {@code onEvent} (may be null) for each event as it arrives,
   * and returns the gathered events. A failed job throws its {@link io.grpc.StatusRuntimeException};
   * an exception from {@code onEvent} cancels the stream and propagates; a stream that ends
   * without its result throws {@link IllegalStateException}.
   */
  public StreamResult collect(
      StreamRequest request, RequestOptions options, Consumer<StreamResponse> onEvent) {
    List<StreamResponse> events = new ArrayList<>();
    Plan plan = null;
    AnalyzeResponse result = null;
    try (Context.CancellableContext ctx = Context.current().withCancellation()) {
      Context previous = ctx.attach();
      try {
        Iterator<StreamResponse> it = stream(request, options);
        while (it.hasNext()) {
          StreamResponse event = it.next();
          events.add(event);
          if (event.hasPlan()) {
            plan = event.getPlan();
          } else if (event.hasResult()) {
            result = event.getResult();
          }
          if (onEvent != null) {
            onEvent.accept(event);
          }
        }
      } finally {
        ctx.detach(previous);
      }
    }
    if (result == null) {
      throw new IllegalStateException("longread: stream ended without a result");
    }
    return new StreamResult(plan, result, events);
  }

  /** Shuts down the channel the client opened (waits up to 5 seconds for calls to finish). */
  @Override
  public void close() {
    if (ownedChannel == null) {
      return;
    }
    ownedChannel.shutdown();
    try {
      if (!ownedChannel.awaitTermination(5, TimeUnit.SECONDS)) {
        ownedChannel.shutdownNow();
      }
    } catch (InterruptedException e) {
      ownedChannel.shutdownNow();
      Thread.currentThread().interrupt();
    }
  }

  /** Configures a {@link LongreadClient}. */
  public static final class Builder {
    private final String target;
    private io.grpc.Channel channel;
    private String apiKey;
    private Duration timeout;
    private boolean plaintext = true;
    private Map<String, ?> serviceConfig = DEFAULT_SERVICE_CONFIG;
    private final Map<String, String> headers = new LinkedHashMap<>();
    private final List<ClientInterceptor> interceptors = new ArrayList<>();

    private Builder(String target) {
      this.target = target;
    }

    /** Sends {@code authorization: Bearer <key>} with every call. */
    public Builder apiKey(String key) {
      this.apiKey = key;
      return this;
    }

    /** The deadline of calls that set none (for streams: the whole stream). */
    public Builder timeout(Duration value) {
      this.timeout = value;
      return this;
    }

    /** Uses TLS (the default is plaintext, for a server on a private network or loopback). */
    public Builder useTransportSecurity() {
      this.plaintext = false;
      return this;
    }

    /**
     * Replaces {@link #DEFAULT_SERVICE_CONFIG} (a parsed gRPC service config: maps, lists,
     * strings, doubles); {@code null}: none, i.e. pick_first and no retries unless the name
     * resolver gives a config. Ignored for a channel the caller owns.
     */
    public Builder serviceConfig(Map<String, ?> config) {
      this.serviceConfig = config;
      return this;
    }

    /** Fixed metadata for every call. */
    public Builder header(String key, String value) {
      headers.put(key, value);
      return this;
    }

    /** A client interceptor (e.g. OpenTelemetry's) for every call. */
    public Builder interceptor(ClientInterceptor interceptor) {
      interceptors.add(interceptor);
      return this;
    }

    public LongreadClient build() {
      return new LongreadClient(this);
    }
  }
}
