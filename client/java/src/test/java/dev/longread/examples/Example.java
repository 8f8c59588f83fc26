package dev.longread.examples;

import dev.longread.client.ErrorDetails;
import dev.longread.client.LongreadClient;
import dev.longread.client.RequestOptions;
import dev.longread.client.StreamResult;
import dev.longread.v1.AnalyzeResponse;
import dev.longread.v1.Document;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.ModelSelection;
import dev.longread.v1.Plan;
import dev.longread.v1.StreamRequest;
import io.grpc.StatusRuntimeException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.HexFormat;

/**
 * Estimates a file with longread, then streams its analysis, printing progress to stderr and the
 * answer to stdout.
 *
 * <pre>
 * LONGREAD_API_KEY=... java -cp ... dev.longread.examples.Example [--target host:port] [-q Q] FILE
 * </pre>
 */
public final class Example {
  private Example() {}

  public static void main(String[] args) throws Exception {
    String target = "localhost:50051";
    String question = "Summarise this document.";
    String model = "";
    String file = null;
    for (int i = 0; i < args.length; i++) {
      switch (args[i]) {
        case "--target" -> target = args[++i];
        case "-q" -> question = args[++i];
        case "--model" -> model = args[++i];
        default -> file = args[i];
      }
    }
    if (file == null) {
      System.err.println("usage: Example [--target host:port] [-q question] [--model id] FILE");
      System.exit(2);
    }
    Document doc = Document.newBuilder().setText(Files.readString(Path.of(file))).build();
    ModelSelection sel = ModelSelection.newBuilder().setModel(model).build();

    // A W3C trace context, so the server's spans join this program's trace.
    SecureRandom rnd = new SecureRandom();
    byte[] ids = new byte[24];
    rnd.nextBytes(ids);
    HexFormat hex = HexFormat.of();
    String traceparent = "00-" + hex.formatHex(ids, 0, 16) + "-" + hex.formatHex(ids, 16, 24) + "-01";
    System.err.println("traceparent: " + traceparent);
    RequestOptions options = RequestOptions.DEFAULT.withTraceparent(traceparent, null);

    try (LongreadClient client = LongreadClient.builder(target)
        .apiKey(System.getenv("LONGREAD_API_KEY")).timeout(Duration.ofMinutes(10)).build()) {
      Plan p = client.estimate(EstimateRequest.newBuilder().setDocument(doc)
          .setInstruction(question).setModel(sel).build(), options).getPlan();
      System.err.printf("plan: %s with %s/%s, %d tokens in %d chunk(s), about $%.4f%n",
          p.getStrategy(), p.getModel().getVendor(), p.getModel().getModel(),
          p.getDocumentTokens(), p.getChunksCount(), p.getEstimatedCost().getTotalUsd());

      int[] done = {0};
      StreamResult res = client.collect(StreamRequest.newBuilder().setDocument(doc)
          .setInstruction(question).setModel(sel).build(), options, ev -> {
            switch (ev.getEventCase()) {
              case CHUNK_STARTED -> System.err.printf("  %s %d/%d started%n",
                  ev.getChunkStarted().getStage(), ev.getChunkStarted().getIndex() + 1,
                  ev.getChunkStarted().getOf());
              case CHUNK_DONE -> System.err.printf("  %s chunk %d done (%d calls finished)%n",
                  ev.getChunkDone().getStage(), ev.getChunkDone().getResult().getIndex(), ++done[0]);
              case WARNING -> System.err.printf("  warning %s: %s%n",
                  ev.getWarning().getCode(), ev.getWarning().getMessage());
              default -> { }
            }
          });
      AnalyzeResponse r = res.result();
      System.out.println(r.getText());
      System.err.printf("%s/%s: %d input + %d output tokens in %d call(s), $%.6f, cache %s%n",
          r.getModel().getVendor(), r.getModel().getModel(), r.getUsage().getInputTokens(),
          r.getUsage().getOutputTokens(), r.getUsage().getCalls(), r.getCost().getTotalUsd(),
          r.getCacheStatus());
    } catch (StatusRuntimeException e) {
      ErrorDetails d = ErrorDetails.from(e).orElseThrow();
      System.err.printf("error: %s %s: %s%n", d.code(), d.reason(), d.message());
      d.fieldViolations().forEach(v -> System.err.printf("  %s: %s%n", v.field(), v.description()));
      d.retryDelay().ifPresent(r -> System.err.println("  retry after " + r));
      System.exit(1);
    }
  }
}
