// Type-checked by the install test (tsc --noEmit): the package's types as an ES module sees them.
import { LongreadClient, Strategy, text, type EstimateResponse } from "@longread/client";

const client: LongreadClient = new LongreadClient({ target: "localhost:50051" });
const pending: Promise<EstimateResponse> = client.estimate({
  document: text("..."),
  instruction: "?",
  chunking: { strategy: Strategy.MAP_REDUCE },
});
void pending;
