package dev.longread.conformance;

import com.google.gson.Gson;
import com.google.gson.JsonElement;
import com.google.gson.JsonParser;
import com.google.gson.ToNumberPolicy;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.protobuf.Message;
import com.google.protobuf.MessageOrBuilder;
import com.google.protobuf.util.JsonFormat;
import dev.longread.client.ErrorDetails;
import dev.longread.client.LongreadClient;
import dev.longread.client.RequestOptions;
import dev.longread.v1.AnalyzeRequest;
import dev.longread.v1.EstimateRequest;
import dev.longread.v1.StreamRequest;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.stream.Stream;

/**
 * Runs the language-neutral conformance cases (tests/conformance/cases) with the Java client
 * against a live server, printing one JSON line per case.
 *
 * <pre>
 * CONFORMANCE_KEY_VALID=... java -cp ... dev.longread.conformance.Runner \
 *     --target 127.0.0.1:50051 --cases ../../tests/conformance/cases [--nonce N] [--case NAME]
 * </pre>
 */
public final class Runner {
  private static final long DEFAULT_DEADLINE_MS = 30_000;
  private static final Gson GSON =
      new Gson().newBuilder().setObjectToNumberStrategy(ToNumberPolicy.DOUBLE).create();
  private static final JsonFormat.Printer PRINTER = JsonFormat.printer().preservingProtoFieldNames();

  private final String target;
  private final Map<String, LongreadClient> clients = new HashMap<>();

  private Runner(String target) {
    this.target = target;
  }

  private static Object toJson(MessageOrBuilder msg) {
    try {
      return GSON.fromJson(PRINTER.print(msg), Object.class);
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalStateException(e);
    }
  }

  private static <B extends Message.Builder> B parse(Object json, B builder) {
    try {
      JsonFormat.parser().merge(GSON.toJson(json), builder);
      return builder;
    } catch (InvalidProtocolBufferException e) {
      throw new IllegalArgumentException("bad request in case: " + e.getMessage(), e);
    }
  }

  private LongreadClient client(String auth) {
    return clients.computeIfAbsent(auth, a -> {
      LongreadClient.Builder b = LongreadClient.builder(target);
      if (!a.equals("none")) {
        String name = "CONFORMANCE_KEY_" + a.toUpperCase();
        String key = System.getenv(name);
        if (key == null || key.isEmpty()) {
          throw new IllegalStateException(name + " is not set");
        }
        b.apiKey(key);
      }
      return b.build();
    });
  }

  private static Map<String, Object> errorJson(Throwable t) {
    Map<String, Object> out = new LinkedHashMap<>();
    ErrorDetails d = ErrorDetails.from(t).orElseThrow(() -> new IllegalStateException(t));
    out.put("code", d.code().name());
    Map<String, Object> e = new LinkedHashMap<>();
    e.put("message", d.message());
    e.put("reason", d.reason());
    e.put("domain", d.domain());
    e.put("metadata", new LinkedHashMap<String, Object>(d.metadata()));
    List<Object> fvs = new ArrayList<>();
    d.fieldViolations().forEach(v -> fvs.add(Map.of("field", v.field(), "description", v.description())));
    e.put("field_violations", fvs);
    List<Object> qvs = new ArrayList<>();
    d.quotaViolations().forEach(v -> qvs.add(Map.of("subject", v.subject(), "description", v.description())));
    e.put("quota_violations", qvs);
    d.retryDelay().ifPresent(r -> e.put("retry_delay_s", r.toNanos() / 1e9));
    out.put("error", e);
    return out;
  }

  @SuppressWarnings("unchecked")
  private Map<String, Object> call(Map<String, Object> step) {
    String rpc = String.valueOf(step.get("rpc"));
    String auth = (String) step.getOrDefault("auth", "valid");
    long deadline = step.get("deadline_ms") instanceof Number n ? n.longValue() : DEFAULT_DEADLINE_MS;
    RequestOptions options = RequestOptions.DEFAULT.withTimeout(Duration.ofMillis(deadline));
    LongreadClient c = client(auth);
    Object request = step.get("request");
    Map<String, Object> out = new LinkedHashMap<>();
    out.put("code", "OK");
    List<Object> events = new ArrayList<>();
    long start = System.nanoTime();
    try {
      switch (rpc) {
        case "Estimate" -> out.put("response",
            toJson(c.estimate(parse(request, EstimateRequest.newBuilder()).build(), options)));
        case "Analyze" -> out.put("response",
            toJson(c.analyze(parse(request, AnalyzeRequest.newBuilder()).build(), options)));
        case "Stream" -> c.collect(parse(request, StreamRequest.newBuilder()).build(), options,
            ev -> events.add(toJson(ev)));
        default -> throw new IllegalArgumentException("unknown rpc " + rpc);
      }
    } catch (StatusRuntimeException e) {
      out.putAll(errorJson(e));
    }
    if (rpc.equals("Stream")) {
      out.put("events", events);
    }
    out.put("elapsed_ms", (System.nanoTime() - start) / 1e6);
    return out;
  }

  @SuppressWarnings("unchecked")
  private List<String> runCase(Map<String, Object> tc) {
    List<String> failures = new ArrayList<>();
    Map<String, Object> outcomes = new HashMap<>();
    List<Map<String, Object>> steps = (List<Map<String, Object>>) tc.get("steps");
    for (int i = 0; i < steps.size(); i++) {
      Map<String, Object> step = steps.get(i);
      String id = (String) step.getOrDefault("id", "step" + i);
      int repeat = step.get("repeat_until_error") instanceof Number n ? n.intValue() : 0;
      Map<String, Object> out;
      int attempts = 0;
      while (true) {
        attempts++;
        out = call(step);
        if (!"OK".equals(out.get("code")) || attempts >= Math.max(repeat, 1)) {
          break;
        }
      }
      out.put("attempts", (double) attempts);
      outcomes.put(id, out);
      Map<String, Object> expect = (Map<String, Object>) step.getOrDefault("expect", Map.of());
      String want = (String) expect.getOrDefault("code", "OK");
      if (!want.equals(out.get("code"))) {
        Object err = out.get("error");
        String message = err instanceof Map<?, ?> m ? String.valueOf(m.get("message")) : "";
        failures.add(id + ": code " + out.get("code") + " (" + message + "), want " + want);
        continue;
      }
      for (Map<String, Object> spec : (List<Map<String, Object>>) expect.getOrDefault("checks", List.of())) {
        String failure = Checks.check(out, spec, outcomes);
        if (!failure.isEmpty()) {
          failures.add(id + ": " + failure);
        }
      }
    }
    return failures;
  }

  @SuppressWarnings("unchecked")
  private static List<Map<String, Object>> loadCases(Path dir, String nonce) throws IOException {
    List<Map<String, Object>> cases = new ArrayList<>();
    try (Stream<Path> files = Files.list(dir)) {
      for (Path p : files.filter(f -> f.toString().endsWith(".json")).sorted().toList()) {
        String text = Files.readString(p, StandardCharsets.UTF_8);
        JsonElement head = JsonParser.parseString(text);
        String name = head.getAsJsonObject().get("name").getAsString();
        cases.add(GSON.fromJson(text.replace("{{nonce}}", nonce + "-" + name), Map.class));
      }
    }
    return cases;
  }

  public static void main(String[] args) throws IOException {
    String target = "127.0.0.1:50051";
    String casesDir = "tests/conformance/cases";
    String nonce = String.valueOf(System.nanoTime());
    List<String> only = new ArrayList<>();
    for (int i = 0; i + 1 < args.length; i += 2) {
      switch (args[i]) {
        case "--target" -> target = args[i + 1];
        case "--cases" -> casesDir = args[i + 1];
        case "--nonce" -> nonce = args[i + 1];
        case "--case" -> only.add(args[i + 1]);
        default -> throw new IllegalArgumentException("unknown argument " + args[i]);
      }
    }
    Runner runner = new Runner(target);
    boolean allOk = true;
    try {
      for (Map<String, Object> tc : loadCases(Path.of(casesDir), nonce)) {
        String name = String.valueOf(tc.get("name"));
        if (!only.isEmpty() && !only.contains(name)) {
          continue;
        }
        long start = System.nanoTime();
        List<String> failures = runner.runCase(tc);
        allOk &= failures.isEmpty();
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("case", name);
        line.put("ok", failures.isEmpty());
        line.put("failures", failures);
        line.put("ms", (System.nanoTime() - start) / 1_000_000);
        System.out.println(GSON.toJson(line));
        System.out.flush();
      }
    } finally {
      runner.clients.values().forEach(LongreadClient::close);
    }
    System.exit(allOk ? 0 : 1);
  }
}
