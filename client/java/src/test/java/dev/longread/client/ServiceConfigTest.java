package dev.longread.client;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.longread.v1.AnalysisServiceGrpc;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.EstimateResponse;
import io.grpc.Grpc;
import io.grpc.InsecureServerCredentials;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.StreamObserver;
import java.time.Duration;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;

/** The default service config against a server on loopback that fails the first attempt. */
class ServiceConfigTest {
  private final AtomicInteger attempts = new AtomicInteger();
  private Server server;

  private final class Flaky extends AnalysisServiceGrpc.AnalysisServiceImplBase {
    @Override
    public void estimate(EstimateRequest req, StreamObserver<EstimateResponse> out) {
      if (attempts.incrementAndGet() == 1) {
        out.onError(Status.UNAVAILABLE.withDescription("replica going away").asRuntimeException());
        return;
      }
      out.onNext(EstimateResponse.getDefaultInstance());
      out.onCompleted();
    }
  }

  @BeforeEach
  void start() throws Exception {
    server = Grpc.newServerBuilderForPort(0, InsecureServerCredentials.create())
        .addService(new Flaky()).build().start();
  }

  @AfterEach
  void stop() throws Exception {
    server.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
  }

  private LongreadClient.Builder builder() {
    return LongreadClient.builder("dns:///127.0.0.1:" + server.getPort())
        .timeout(Duration.ofSeconds(10));
  }

  @Test
  void retriesUnavailableByDefault() {
    try (LongreadClient client = builder().build()) {
      client.estimate(EstimateRequest.getDefaultInstance());
    }
    assertEquals(2, attempts.get());
  }

  @Test
  void withoutAServiceConfigTheFirstFailureIsFinal() {
    try (LongreadClient client = builder().serviceConfig(null).build()) {
      StatusRuntimeException e = assertThrows(StatusRuntimeException.class,
          () -> client.estimate(EstimateRequest.getDefaultInstance()));
      assertEquals(Status.Code.UNAVAILABLE, e.getStatus().getCode());
    }
    assertEquals(1, attempts.get());
  }
}
