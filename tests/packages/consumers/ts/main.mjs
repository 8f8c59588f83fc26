// The install test's program (the same in every language): Estimate, then Stream, of one file,
// with the package loaded as an ES module.
//
//   node main.mjs TARGET FILE QUESTION     (LONGREAD_API_KEY: the key)
import { readFileSync } from "node:fs";
import { LongreadClient, Strategy, text } from "@longread/client";

const [target, path, question] = process.argv.slice(2);
const client = new LongreadClient({ target, apiKey: process.env.LONGREAD_API_KEY, timeoutMs: 120_000 });
const request = { document: text(readFileSync(path, "utf-8")), instruction: question, chunking: { maxChunkTokens: 256, strategy: Strategy.MAP_REDUCE } };
const est = await client.estimate(request);
const fit = est.candidates.filter((m) => m.fitsSinglePass).length;
let calls = 0;
let answer = "";
for await (const ev of client.stream(request)) {
  if (ev.event.case === "chunkDone") calls++;
  else if (ev.event.case === "result") answer = ev.event.value.text;
}
client.close();
console.log(`fit=${fit} chunks=${est.plan.chunks.length} calls=${calls} answer=${[...answer].length}`);
