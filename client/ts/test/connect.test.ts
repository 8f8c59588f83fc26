// The Connect transport against a real gateway: `longread serve` from the repository's
// virtualenv (`make install`), with its HTTP listener on and the built-in sandbox upstream.
import { Code } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, test } from "node:test";
import { LongreadClient, errorDetails, text } from "../src/index.js";

// dist/test/ -> the repository root.
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
const LONGREAD = resolve(ROOT, ".venv/bin/longread");
const DOC = "The lighthouse was built in 1871. Its lamp was converted to electricity in 1926.";
const Q = "When was the lamp converted?";

let server: ChildProcess | undefined;
let httpTarget = "";

before(async () => {
  if (!existsSync(LONGREAD)) {
    return;
  }
  server = spawn(LONGREAD, ["serve"], {
    env: {
      ...process.env,
      LONGREAD_CONFIG: "",
      LONGREAD_LISTEN: "127.0.0.1:0",
      LONGREAD_HTTP__LISTEN: "127.0.0.1:0",
      LONGREAD_SERVER__DRAIN_DELAY_S: "0",
      LONGREAD_SERVER__GRACE_S: "1",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  httpTarget = await new Promise<string>((ok, fail) => {
    let out = "";
    const timer = setTimeout(() => fail(new Error(`no HTTP listener in: ${out}`)), 60_000);
    server!.stderr!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
    });
    server!.stdout!.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      const m = /serving HTTP \(Connect, gRPC-Web\) on (\S+)/.exec(out);
      if (m) {
        clearTimeout(timer);
        ok(`http://${m[1]}`);
      }
    });
    server!.on("exit", (code) => fail(new Error(`longread serve exited (${code}): ${out}`)));
  });
});

after(() => {
  server?.kill("SIGTERM");
});

for (const json of [false, true]) {
  test(`estimate, analyze and stream over Connect (${json ? "JSON" : "binary"})`, async (t) => {
    if (!server) {
      t.skip(`no ${LONGREAD}: run make install`);
      return;
    }
    const client = new LongreadClient({ target: httpTarget, transport: "connect", json, timeoutMs: 60_000 });
    const est = await client.estimate({ document: text(DOC), instruction: Q });
    assert.ok(est.plan && est.plan.documentTokens > 0n);
    const r = await client.analyze({ document: text(DOC), instruction: Q });
    assert.ok(r.text.length > 0);
    const s = await client.collect({ document: text(DOC), instruction: Q });
    assert.equal(s.events[0]?.event.case, "plan");
    assert.equal(s.result.text, r.text);
    const err = await client.analyze({ document: text(""), instruction: Q }).catch((e: unknown) => e);
    const d = errorDetails(err);
    assert.ok(d, String(err));
    assert.equal(d.code, Code.InvalidArgument);
    assert.equal(d.reason, "INVALID_FIELD");
    assert.deepEqual(
      d.fieldViolations.map((v) => v.field),
      ["document.text"],
    );
    client.close();
  });
}
