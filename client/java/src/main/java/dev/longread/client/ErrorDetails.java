package dev.longread.client;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.BadRequest;
import com.google.rpc.ErrorInfo;
import com.google.rpc.QuotaFailure;
import com.google.rpc.RetryInfo;
import io.grpc.Status;
import io.grpc.protobuf.StatusProto;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Optional;

/**
 * The decoded google.rpc status of a failed call.
 *
 * @param code the gRPC status code
 * @param message the server's message
 * @param reason the ErrorInfo reason: an ErrorReason name without its prefix ("INVALID_FIELD",
 *     "RATE_LIMITED")
 * @param domain the ErrorInfo domain ("longread.dev")
 * @param metadata the ErrorInfo metadata
 * @param fieldViolations BadRequest field violations (INVALID_ARGUMENT), all of them at once
 * @param retryDelay the RetryInfo delay, when the server sent one
 * @param quotaViolations QuotaFailure violations (RESOURCE_EXHAUSTED)
 */
public record ErrorDetails(
    Status.Code code,
    String message,
    String reason,
    String domain,
    Map<String, String> metadata,
    List<FieldViolation> fieldViolations,
    Optional<Duration> retryDelay,
    List<QuotaViolation> quotaViolations) {

  /** The ErrorInfo domain of every error the service returns. */
  public static final String DOMAIN = "longread.dev";

  /** One invalid request field, e.g. {@code generation.temperature}. */
  public record FieldViolation(String field, String description, String reason) {}

  /** One exhausted limit. */
  public record QuotaViolation(String subject, String description) {}

  public ErrorDetails {
    metadata = Map.copyOf(metadata);
    fieldViolations = List.copyOf(fieldViolations);
    quotaViolations = List.copyOf(quotaViolations);
  }

  /**
   * Decodes the status of a failed call ({@link io.grpc.StatusRuntimeException} or
   * {@link io.grpc.StatusException}, possibly as a cause); empty for anything else.
   */
  public static Optional<ErrorDetails> from(Throwable t) {
    Status status = Status.fromThrowable(t);
    if (status.getCode() == Status.Code.UNKNOWN && status.getCause() == t) {
      return Optional.empty(); // not a gRPC status error
    }
    String message = status.getDescription() == null ? "" : status.getDescription();
    String reason = "";
    String domain = "";
    Map<String, String> metadata = Map.of();
    List<FieldViolation> fields = new ArrayList<>();
    Optional<Duration> retry = Optional.empty();
    List<QuotaViolation> quota = new ArrayList<>();
    com.google.rpc.Status proto = StatusProto.fromThrowable(t);
    if (proto != null) {
      try {
        for (Any detail : proto.getDetailsList()) {
          if (detail.is(ErrorInfo.class)) {
            ErrorInfo info = detail.unpack(ErrorInfo.class);
            reason = info.getReason();
            domain = info.getDomain();
            metadata = info.getMetadataMap();
          } else if (detail.is(BadRequest.class)) {
            for (BadRequest.FieldViolation v : detail.unpack(BadRequest.class).getFieldViolationsList()) {
              fields.add(new FieldViolation(v.getField(), v.getDescription(), v.getReason()));
            }
          } else if (detail.is(RetryInfo.class)) {
            com.google.protobuf.Duration d = detail.unpack(RetryInfo.class).getRetryDelay();
            retry = Optional.of(Duration.ofSeconds(d.getSeconds(), d.getNanos()));
          } else if (detail.is(QuotaFailure.class)) {
            for (QuotaFailure.Violation v : detail.unpack(QuotaFailure.class).getViolationsList()) {
              quota.add(new QuotaViolation(v.getSubject(), v.getDescription()));
            }
          }
        }
      } catch (InvalidProtocolBufferException e) {
        // A malformed detail: keep what was decoded; the code and message still stand.
      }
    }
    return Optional.of(
        new ErrorDetails(status.getCode(), message, reason, domain, metadata, fields, retry, quota));
  }
}
