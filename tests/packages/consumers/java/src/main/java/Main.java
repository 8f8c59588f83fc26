// The install test's program (the same in every language): Estimate, then Stream, of one file.
//
//   java -cp ... Main TARGET FILE QUESTION     (LONGREAD_API_KEY: the key)

import dev.longread.client.LongreadClient;
import dev.longread.v1.ChunkingOptions;
import dev.longread.v1.Document;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.EstimateResponse;
import dev.longread.v1.ModelFit;
import dev.longread.v1.StreamRequest;
import dev.longread.v1.StreamResponse;
import dev.longread.v1.Strategy;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.Iterator;

public final class Main {
  private Main() {}

  public static void main(String[] args) throws Exception {
    String target = args[0];
    Document doc = Document.newBuilder().setText(Files.readString(Path.of(args[1]))).build();
    String question = args[2];
    ChunkingOptions chunking =
        ChunkingOptions.newBuilder()
            .setMaxChunkTokens(256)
            .setStrategy(Strategy.STRATEGY_MAP_REDUCE)
            .build();
    try (LongreadClient client =
        LongreadClient.builder(target)
            .apiKey(System.getenv("LONGREAD_API_KEY"))
            .timeout(Duration.ofMinutes(2))
            .build()) {
      EstimateResponse est =
          client.estimate(
              EstimateRequest.newBuilder()
                  .setDocument(doc)
                  .setInstruction(question)
                  .setChunking(chunking)
                  .build());
      long fit = est.getCandidatesList().stream().filter(ModelFit::getFitsSinglePass).count();
      int calls = 0;
      String answer = "";
      Iterator<StreamResponse> events =
          client.stream(
              StreamRequest.newBuilder()
                  .setDocument(doc)
                  .setInstruction(question)
                  .setChunking(chunking)
                  .build());
      while (events.hasNext()) {
        StreamResponse ev = events.next();
        if (ev.hasChunkDone()) {
          calls++;
        } else if (ev.hasResult()) {
          answer = ev.getResult().getText();
        }
      }
      System.out.printf(
          "fit=%d chunks=%d calls=%d answer=%d%n",
          fit, est.getPlan().getChunksCount(), calls, answer.codePointCount(0, answer.length()));
    }
  }
}
