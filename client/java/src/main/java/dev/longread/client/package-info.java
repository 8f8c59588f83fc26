/**
 * A small Java client for longread, the gRPC service that has long documents analysed by LLMs.
 *
 * <p>The generated API ({@link dev.longread.v1.AnalysisServiceGrpc} and the messages in
 * {@code dev.longread.v1}) can be used as is; {@link dev.longread.client.LongreadClient} adds only
 * what it makes awkward: the API key and fixed metadata on every call, a default deadline,
 * collecting a Stream into the result Analyze would return, and W3C trace context.
 * {@link dev.longread.client.ErrorDetails} decodes the google.rpc details every failure carries
 * (ErrorInfo, BadRequest field violations, RetryInfo, QuotaFailure).
 *
 * <pre>{@code
 * try (LongreadClient client = LongreadClient.builder("localhost:50051")
 *     .apiKey(System.getenv("LONGREAD_API_KEY")).build()) {
 *   AnalyzeResponse res = client.analyze(AnalyzeRequest.newBuilder()
 *       .setDocument(Document.newBuilder().setText(report))
 *       .setInstruction("Why was the Northfield plant delayed?").build());
 * } catch (StatusRuntimeException e) {
 *   ErrorDetails.from(e).ifPresent(d -> System.err.println(d.reason() + " " + d.fieldViolations()));
 * }
 * }</pre>
 */
package dev.longread.client;
