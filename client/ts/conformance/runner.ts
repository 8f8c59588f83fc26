// Runs the language-neutral conformance cases (tests/conformance/cases) with the TypeScript
// client against a live server, printing one JSON line per case.
//
//   CONFORMANCE_KEY_VALID=... node dist/conformance/runner.js --target 127.0.0.1:50051 \
//     --cases ../../tests/conformance/cases [--nonce N] [--case NAME]
import { fromJson, toJson, type DescMessage, type JsonValue, type Message } from "@bufbuild/protobuf";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  AnalyzeRequestSchema,
  AnalyzeResponseSchema,
  EstimateRequestSchema,
  EstimateResponseSchema,
  LongreadClient,
  StreamRequestSchema,
  StreamResponseSchema,
  errorDetails,
} from "../src/index.js";
import { check, type Json } from "./checks.js";

const DEFAULT_DEADLINE_MS = 30_000;

interface Step {
  id?: string;
  rpc: "Estimate" | "Analyze" | "Stream";
  auth?: string;
  deadline_ms?: number;
  repeat_until_error?: number;
  request: JsonValue;
  expect?: { code?: string; checks?: { [key: string]: Json }[] };
}

interface Case {
  name: string;
  steps: Step[];
}

function asJson<D extends DescMessage>(schema: D, msg: Message): Json {
  return toJson(schema, msg as never, { useProtoFieldName: true }) as Json;
}

function errorJson(err: unknown): [string, Json] {
  const d = errorDetails(err);
  if (!d) {
    return ["UNKNOWN", { message: String(err) }];
  }
  const out: { [key: string]: Json } = {
    message: d.message,
    reason: d.reason,
    domain: d.domain,
    metadata: d.metadata,
    field_violations: d.fieldViolations.map((v) => ({ field: v.field, description: v.description })),
    quota_violations: d.quotaViolations.map((v) => ({ subject: v.subject, description: v.description })),
  };
  if (d.retryDelayMs !== undefined) {
    out.retry_delay_s = d.retryDelayMs / 1000;
  }
  return [d.codeName, out];
}

class Runner {
  private readonly clients = new Map<string, LongreadClient>();
  constructor(private readonly target: string) {}

  client(auth: string): LongreadClient {
    let c = this.clients.get(auth);
    if (!c) {
      let apiKey: string | undefined;
      if (auth !== "none") {
        const name = `CONFORMANCE_KEY_${auth.toUpperCase()}`;
        apiKey = process.env[name];
        if (!apiKey) {
          throw new Error(`${name} is not set`);
        }
      }
      c = new LongreadClient({ target: this.target, apiKey });
      this.clients.set(auth, c);
    }
    return c;
  }

  async call(step: Step): Promise<{ [key: string]: Json }> {
    const c = this.client(step.auth ?? "valid");
    const call = { timeoutMs: step.deadline_ms ?? DEFAULT_DEADLINE_MS };
    const out: { [key: string]: Json } = { code: "OK" };
    const events: Json[] = [];
    const start = performance.now();
    try {
      switch (step.rpc) {
        case "Estimate":
          out.response = asJson(EstimateResponseSchema,
            await c.estimate(fromJson(EstimateRequestSchema, step.request), call));
          break;
        case "Analyze":
          out.response = asJson(AnalyzeResponseSchema,
            await c.analyze(fromJson(AnalyzeRequestSchema, step.request), call));
          break;
        case "Stream":
          await c.collect(fromJson(StreamRequestSchema, step.request), {
            ...call,
            onEvent: (ev) => events.push(asJson(StreamResponseSchema, ev)),
          });
          break;
        default:
          throw new Error(`unknown rpc ${String(step.rpc)}`);
      }
    } catch (err) {
      const [code, error] = errorJson(err);
      out.code = code;
      out.error = error;
    }
    if (step.rpc === "Stream") {
      out.events = events;
    }
    out.elapsed_ms = performance.now() - start;
    return out;
  }

  async runCase(c: Case): Promise<string[]> {
    const failures: string[] = [];
    const outcomes: Record<string, Json> = {};
    for (const [i, step] of c.steps.entries()) {
      const id = step.id ?? `step${i}`;
      let out: { [key: string]: Json };
      let attempts = 0;
      for (;;) {
        attempts++;
        out = await this.call(step);
        if (out.code !== "OK" || attempts >= Math.max(step.repeat_until_error ?? 0, 1)) {
          break;
        }
      }
      out.attempts = attempts;
      outcomes[id] = out;
      const want = step.expect?.code ?? "OK";
      if (out.code !== want) {
        const err = out.error as { message?: string } | undefined;
        failures.push(`${id}: code ${String(out.code)} (${err?.message ?? ""}), want ${want}`);
        continue;
      }
      for (const spec of step.expect?.checks ?? []) {
        const failure = check(out, spec, outcomes);
        if (failure) {
          failures.push(`${id}: ${failure}`);
        }
      }
    }
    return failures;
  }

  close(): void {
    for (const c of this.clients.values()) {
      c.close();
    }
  }
}

function loadCases(dir: string, nonce: string): Case[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith(".json"))
    .sort()
    .map((f) => {
      const text = readFileSync(join(dir, f), "utf-8");
      const name = (JSON.parse(text) as Case).name;
      return JSON.parse(text.replaceAll("{{nonce}}", `${nonce}-${name}`)) as Case;
    });
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      target: { type: "string", default: "127.0.0.1:50051" },
      cases: { type: "string", default: "tests/conformance/cases" },
      nonce: { type: "string", default: String(Date.now()) },
      case: { type: "string", multiple: true, default: [] },
    },
  });
  const runner = new Runner(values.target);
  let allOk = true;
  try {
    for (const c of loadCases(values.cases, values.nonce)) {
      if (values.case.length > 0 && !values.case.includes(c.name)) {
        continue;
      }
      const start = performance.now();
      const failures = await runner.runCase(c);
      allOk &&= failures.length === 0;
      const ms = Math.round(performance.now() - start);
      console.log(JSON.stringify({ case: c.name, ok: failures.length === 0, failures, ms }));
    }
  } finally {
    runner.close();
  }
  return allOk ? 0 : 1;
}

process.exitCode = await main();
