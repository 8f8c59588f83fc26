// The retry interceptor (the other clients' default service config) against a server on
// loopback that fails the first attempts with UNAVAILABLE, as a replica going away.
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import assert from "node:assert/strict";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { after, before, beforeEach, test } from "node:test";
import {
  AnalysisService,
  AnalyzeResponseSchema,
  EstimateResponseSchema,
  LongreadClient,
  text,
} from "../src/index.js";

const attempts = { estimate: 0, analyze: 0, stream: 0 };
let failures = 1;
let failAfterFirst = false;
let pushback = false;

function unavailable(): ConnectError {
  return new ConnectError("replica going away", Code.Unavailable);
}

function routes(router: ConnectRouter) {
  router.service(AnalysisService, {
    estimate(_req, ctx) {
      if (++attempts.estimate <= failures) {
        if (pushback) ctx.responseTrailer.set("grpc-retry-pushback-ms", "-1");
        throw unavailable();
      }
      return create(EstimateResponseSchema, {});
    },
    analyze() {
      if (++attempts.analyze <= failures) throw unavailable();
      return create(AnalyzeResponseSchema, { text: "1926" });
    },
    async *stream() {
      const n = ++attempts.stream;
      if (!failAfterFirst && n <= failures) throw unavailable();
      yield { event: { case: "plan", value: { documentTokens: 7n } } };
      if (failAfterFirst && n <= failures) throw unavailable();
      yield { event: { case: "result", value: create(AnalyzeResponseSchema, { text: "1926" }) } };
    },
  });
}

const server = http2.createServer(connectNodeAdapter({ routes }));
let target = "";

before(async () => {
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  target = `127.0.0.1:${(server.address() as AddressInfo).port}`;
});

beforeEach(() => {
  attempts.estimate = attempts.analyze = attempts.stream = 0;
  failures = 1;
  failAfterFirst = false;
  pushback = false;
});

after(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const req = { document: text("The lamp was converted in 1926."), instruction: "When?" };

test("estimate and analyze are retried on UNAVAILABLE", async () => {
  failures = 2;
  const client = new LongreadClient({ target, timeoutMs: 10_000 });
  await client.estimate(req);
  assert.equal((await client.analyze(req)).text, "1926");
  client.close();
  assert.deepEqual([attempts.estimate, attempts.analyze], [3, 3]);
});

test("a stream is retried before its first message only", async () => {
  const client = new LongreadClient({ target, timeoutMs: 10_000 });
  assert.equal((await client.collect(req)).result.text, "1926");
  assert.equal(attempts.stream, 2);
  attempts.stream = 0;
  failAfterFirst = true;
  const err = await client.collect(req).catch((e: unknown) => e);
  assert.equal(ConnectError.from(err).code, Code.Unavailable);
  assert.equal(attempts.stream, 1); // committed after the first message: never retried
  client.close();
});

test("retry: false leaves the first failure final", async () => {
  const client = new LongreadClient({ target, timeoutMs: 10_000, retry: false });
  const err = await client.estimate(req).catch((e: unknown) => e);
  assert.equal(ConnectError.from(err).code, Code.Unavailable);
  assert.equal(attempts.estimate, 1);
  client.close();
});

test("a pushback of -1 (the server says: every replica would fail) is not retried", async () => {
  pushback = true;
  const client = new LongreadClient({ target, timeoutMs: 10_000 });
  const err = await client.estimate(req).catch((e: unknown) => e);
  assert.equal(ConnectError.from(err).code, Code.Unavailable);
  assert.equal(attempts.estimate, 1);
  client.close();
});
