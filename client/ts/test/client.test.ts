// Unit tests against an in-process gRPC server (Connect's Node adapter over HTTP/2).
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, test } from "node:test";
import {
  BadRequestSchema,
  ErrorInfoSchema,
  QuotaFailureSchema,
  RetryInfoSchema,
} from "../src/gen/google/rpc/error_details_pb.js";
import {
  AnalysisService,
  AnalyzeResponseSchema,
  DOMAIN,
  EstimateResponseSchema,
  LongreadClient,
  errorDetails,
  fromJson,
  text,
  toJson,
  toJsonString,
} from "../src/index.js";

let seen: Headers | undefined;
let sawDeadline = false;

function routes(router: ConnectRouter) {
  router.service(AnalysisService, {
    estimate(_req, ctx) {
      seen = ctx.requestHeader;
      sawDeadline = ctx.timeoutMs() !== undefined;
      return create(EstimateResponseSchema, {});
    },
    analyze(req) {
      if (req.instruction === "") {
        throw new ConnectError("invalid request", Code.InvalidArgument, undefined, [
          { desc: ErrorInfoSchema, value: { reason: "INVALID_FIELD", domain: DOMAIN } },
          {
            desc: BadRequestSchema,
            value: { fieldViolations: [{ field: "instruction", description: "must not be empty" }] },
          },
        ]);
      }
      throw new ConnectError("slow down", Code.ResourceExhausted, undefined, [
        { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: DOMAIN, metadata: { tenant: "t" } } },
        { desc: RetryInfoSchema, value: { retryDelay: durationFromMs(1500) } },
        { desc: QuotaFailureSchema, value: { violations: [{ subject: "tenant:t", description: "rpm" }] } },
      ]);
    },
    async *stream(req) {
      yield { event: { case: "plan", value: { documentTokens: 7n } } };
      yield { event: { case: "delta", value: { text: "hel" } } };
      yield { event: { case: "delta", value: { text: "lo" } } };
      if (req.instruction !== "truncate") {
        yield { event: { case: "result", value: create(AnalyzeResponseSchema, { text: "hello" }) } };
      }
    },
  });
}

const server = http2.createServer(connectNodeAdapter({ routes }));
let client: LongreadClient;

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  client = new LongreadClient({
    target: `127.0.0.1:${port}`,
    apiKey: "k1",
    timeoutMs: 60_000,
    headers: { "x-team": "docs" },
  });
});

after(async () => {
  client.close();
  await new Promise((resolve) => server.close(resolve));
});

test("sends the API key, fixed headers, traceparent and the default deadline", async () => {
  const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  await client.estimate({ document: text("x"), instruction: "y" }, { traceparent: tp });
  assert.equal(seen?.get("authorization"), "Bearer k1");
  assert.equal(seen?.get("x-team"), "docs");
  assert.equal(seen?.get("traceparent"), tp);
  assert.ok(sawDeadline);
});

test("decodes field violations", async () => {
  const err = await client.analyze({ instruction: "" }).catch((e: unknown) => e);
  const d = errorDetails(err);
  assert.equal(d?.codeName, "INVALID_ARGUMENT");
  assert.equal(d?.reason, "INVALID_FIELD");
  assert.deepEqual(d?.fieldViolations, [{ field: "instruction", description: "must not be empty", reason: "" }]);
  assert.equal(d?.retryDelayMs, undefined);
  assert.equal(errorDetails(new Error("plain")), undefined);
});

test("decodes retry info and quota failures", async () => {
  const err = await client.analyze({ instruction: "q" }).catch((e: unknown) => e);
  const d = errorDetails(err);
  assert.equal(d?.code, Code.ResourceExhausted);
  assert.equal(d?.domain, DOMAIN);
  assert.equal(d?.retryDelayMs, 1500);
  assert.deepEqual(d?.metadata, { tenant: "t" });
  assert.deepEqual(d?.quotaViolations, [{ subject: "tenant:t", description: "rpm" }]);
});

test("collect gathers a stream in order", async () => {
  const cases: string[] = [];
  const res = await client.collect({ instruction: "q" }, { onEvent: (ev) => cases.push(ev.event.case ?? "") });
  assert.deepEqual(cases, ["plan", "delta", "delta", "result"]);
  assert.equal(res.plan?.documentTokens, 7n);
  assert.equal(res.result.text, "hello");
  await assert.rejects(client.collect({ instruction: "truncate" }), /without a result/);
});

test("a response with int64 fields goes to JSON and back through the re-exported toJson", () => {
  const res = create(AnalyzeResponseSchema, {
    text: "answer",
    usage: { inputTokens: 9_007_199_254_740_993n, outputTokens: 12n, calls: 1 },
  });
  assert.throws(() => JSON.stringify(res), TypeError); // what toJson is for
  const json = toJson(AnalyzeResponseSchema, res);
  assert.deepEqual(json, {
    text: "answer",
    usage: { inputTokens: "9007199254740993", outputTokens: "12", calls: 1 },
  });
  const back = fromJson(AnalyzeResponseSchema, JSON.parse(JSON.stringify(json)));
  assert.equal(back.usage?.inputTokens, 9_007_199_254_740_993n);
  assert.equal(toJsonString(AnalyzeResponseSchema, res), JSON.stringify(json));
});
