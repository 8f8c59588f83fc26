// Estimates a file with longread, then streams its analysis, printing progress to stderr and
// the answer to stdout.
//
//   LONGREAD_API_KEY=... node dist/examples/example.js [--target host:port] [-q QUESTION] FILE
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { LongreadClient, Stage, errorDetails, text } from "../src/index.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    target: { type: "string", default: "localhost:50051" },
    q: { type: "string", default: "Summarise this document." },
    model: { type: "string", default: "" },
  },
});
if (positionals.length !== 1) {
  console.error("usage: example [--target host:port] [-q question] [--model id] FILE");
  process.exit(2);
}

const client = new LongreadClient({
  target: values.target,
  apiKey: process.env.LONGREAD_API_KEY,
  timeoutMs: 10 * 60_000,
});
// A W3C trace context, so the server's spans join this program's trace.
const traceparent = `00-${randomBytes(16).toString("hex")}-${randomBytes(8).toString("hex")}-01`;
console.error(`traceparent: ${traceparent}`);

const request = {
  document: text(readFileSync(positionals[0], "utf-8")),
  instruction: values.q,
  model: { model: values.model },
};
try {
  const { plan } = await client.estimate(request, { traceparent });
  console.error(
    `plan: ${plan?.model?.vendor}/${plan?.model?.model}, ${plan?.documentTokens} tokens in ` +
      `${plan?.chunks.length} chunk(s), about $${plan?.estimatedCost?.totalUsd.toFixed(4)}`,
  );
  let done = 0;
  const { result } = await client.collect(request, {
    traceparent,
    onEvent: (ev) => {
      switch (ev.event.case) {
        case "chunkStarted":
          console.error(`  ${Stage[ev.event.value.stage]} ${ev.event.value.index + 1}/${ev.event.value.of} started`);
          break;
        case "chunkDone":
          done++;
          console.error(`  ${Stage[ev.event.value.stage]} chunk ${ev.event.value.result?.index ?? 0} done (${done} calls finished)`);
          break;
        case "warning":
          console.error(`  warning ${ev.event.value.code}: ${ev.event.value.message}`);
          break;
      }
    },
  });
  console.log(result.text);
  const u = result.usage;
  console.error(
    `${result.model?.vendor}/${result.model?.model}: ${u?.inputTokens} input + ${u?.outputTokens} ` +
      `output tokens in ${u?.calls} call(s), $${result.cost?.totalUsd.toFixed(6)}`,
  );
} catch (err) {
  const d = errorDetails(err);
  if (!d) {
    throw err;
  }
  console.error(`error: ${d.codeName} ${d.reason}: ${d.message}`);
  for (const v of d.fieldViolations) {
    console.error(`  ${v.field}: ${v.description}`);
  }
  if (d.retryDelayMs !== undefined) {
    console.error(`  retry after ${d.retryDelayMs} ms`);
  }
  process.exitCode = 1;
} finally {
  client.close();
}
