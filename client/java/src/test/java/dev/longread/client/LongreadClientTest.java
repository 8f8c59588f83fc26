package dev.longread.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.google.protobuf.Any;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import dev.longread.v1.AnalysisServiceGrpc;
import dev.longread.v1.AnalyzeRequest;
import dev.longread.v1.AnalyzeResponse;
import dev.longread.v1.Delta;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.EstimateResponse;
import dev.longread.v1.Plan;
import dev.longread.v1.StreamRequest;
import dev.longread.v1.StreamResponse;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.inprocess.InProcessChannelBuilder;
import io.grpc.inprocess.InProcessServerBuilder;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The wrapper against an in-process server. */
class LongreadClientTest {
  private final AtomicReference<Metadata> seen = new AtomicReference<>();
  private final AtomicReference<Boolean> sawDeadline = new AtomicReference<>(false);
  private Server server;
  private ManagedChannel channel;
  private LongreadClient client;

  private final class Fake extends AnalysisServiceGrpc.AnalysisServiceImplBase {
    @Override
    public void estimate(EstimateRequest req, StreamObserver<EstimateResponse> out) {
      sawDeadline.set(Context.current().getDeadline() != null);
      com.google.rpc.Status st = com.google.rpc.Status.newBuilder()
          .setCode(Status.Code.RESOURCE_EXHAUSTED.value())
          .setMessage("slow down")
          .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("RATE_LIMITED")
              .setDomain(ErrorDetails.DOMAIN).putMetadata("tenant", "t").build()))
          .addDetails(Any.pack(RetryInfo.newBuilder().setRetryDelay(
              com.google.protobuf.Duration.newBuilder().setSeconds(1).setNanos(500_000_000)).build()))
          .addDetails(Any.pack(QuotaFailure.newBuilder().addViolations(
              QuotaFailure.Violation.newBuilder().setSubject("tenant:t").setDescription("rpm")).build()))
          .build();
      out.onError(StatusProto.toStatusRuntimeException(st));
    }

    @Override
    public void analyze(AnalyzeRequest req, StreamObserver<AnalyzeResponse> out) {
      com.google.rpc.Status st = com.google.rpc.Status.newBuilder()
          .setCode(Status.Code.INVALID_ARGUMENT.value())
          .setMessage("invalid request")
          .addDetails(Any.pack(ErrorInfo.newBuilder().setReason("INVALID_FIELD").setDomain(ErrorDetails.DOMAIN).build()))
          .addDetails(Any.pack(BadRequest.newBuilder().addFieldViolations(BadRequest.FieldViolation.newBuilder()
              .setField("generation.temperature").setDescription("must be in [0, 2]")).build()))
          .build();
      out.onError(StatusProto.toStatusRuntimeException(st));
    }

    @Override
    public void stream(StreamRequest req, StreamObserver<StreamResponse> out) {
      out.onNext(StreamResponse.newBuilder().setPlan(Plan.newBuilder().setDocumentTokens(7)).build());
      out.onNext(StreamResponse.newBuilder().setDelta(Delta.newBuilder().setText("hel")).build());
      out.onNext(StreamResponse.newBuilder().setDelta(Delta.newBuilder().setText("lo")).build());
      if (!req.getInstruction().equals("truncate")) {
        out.onNext(StreamResponse.newBuilder().setResult(AnalyzeResponse.newBuilder().setText("hello")).build());
      }
      out.onCompleted();
    }
  }

  @BeforeEach
  void start() throws Exception {
    String name = InProcessServerBuilder.generateName();
    ServerInterceptor record = new ServerInterceptor() {
      @Override
      public <Q, R> ServerCall.Listener<Q> interceptCall(
          ServerCall<Q, R> call, Metadata headers, ServerCallHandler<Q, R> next) {
        seen.set(headers);
        return Contexts.interceptCall(Context.current(), call, headers, next);
      }
    };
    server = InProcessServerBuilder.forName(name).directExecutor()
        .addService(ServerInterceptors.intercept(new Fake(), record)).build().start();
    channel = InProcessChannelBuilder.forName(name).directExecutor().build();
    client = LongreadClient.builder(channel).apiKey("k1").timeout(Duration.ofMinutes(1))
        .header("x-team", "docs").build();
  }

  @AfterEach
  void stop() {
    client.close();
    channel.shutdownNow();
    server.shutdownNow();
  }

  private String header(String key) {
    return seen.get().get(Metadata.Key.of(key, Metadata.ASCII_STRING_MARSHALLER));
  }

  @Test
  void sendsMetadataDeadlineAndDecodesRetryDetails() {
    String tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class,
        () -> client.estimate(EstimateRequest.getDefaultInstance(),
            RequestOptions.DEFAULT.withTraceparent(tp, null)));
    assertEquals("Bearer k1", header("authorization"));
    assertEquals("docs", header("x-team"));
    assertEquals(tp, header("traceparent"));
    assertTrue(sawDeadline.get());
    ErrorDetails d = ErrorDetails.from(e).orElseThrow();
    assertEquals(Status.Code.RESOURCE_EXHAUSTED, d.code());
    assertEquals("RATE_LIMITED", d.reason());
    assertEquals(ErrorDetails.DOMAIN, d.domain());
    assertEquals("t", d.metadata().get("tenant"));
    assertEquals(Duration.ofMillis(1500), d.retryDelay().orElseThrow());
    assertEquals(List.of(new ErrorDetails.QuotaViolation("tenant:t", "rpm")), d.quotaViolations());
  }

  @Test
  void decodesFieldViolations() {
    StatusRuntimeException e = assertThrows(StatusRuntimeException.class,
        () -> client.analyze(AnalyzeRequest.getDefaultInstance()));
    ErrorDetails d = ErrorDetails.from(e).orElseThrow();
    assertEquals(Status.Code.INVALID_ARGUMENT, d.code());
    assertEquals("generation.temperature", d.fieldViolations().get(0).field());
    assertTrue(d.retryDelay().isEmpty());
    assertTrue(ErrorDetails.from(new RuntimeException("plain")).isEmpty());
  }

  @Test
  void collectsAStreamInOrder() {
    List<StreamResponse.EventCase> cases = new ArrayList<>();
    StreamResult res = client.collect(StreamRequest.newBuilder().setInstruction("q").build(),
        ev -> cases.add(ev.getEventCase()));
    assertEquals(List.of(StreamResponse.EventCase.PLAN, StreamResponse.EventCase.DELTA,
        StreamResponse.EventCase.DELTA, StreamResponse.EventCase.RESULT), cases);
    assertNotNull(res.plan());
    assertEquals(7, res.plan().getDocumentTokens());
    assertEquals("hello", res.result().getText());
    assertThrows(IllegalStateException.class,
        () -> client.collect(StreamRequest.newBuilder().setInstruction("truncate").build(), null));
  }
}
