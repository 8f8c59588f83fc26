// Type-checked by the install test (tsc --noEmit): the package's types as CommonJS sees them.
import longread = require("@longread/client");

const client: longread.LongreadClient = new longread.LongreadClient({ target: "localhost:50051" });
const pending: Promise<longread.EstimateResponse> = client.estimate({
  document: longread.text("..."),
  instruction: "?",
  chunking: { strategy: longread.Strategy.MAP_REDUCE },
});
void pending;
