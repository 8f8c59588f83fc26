// The page's client: the Connect protocol's JSON form over fetch (unary: one JSON body;
// server streaming: length-prefixed envelopes, the last flagged as the end of the stream).
// Nothing to build or bundle: the gateway serves these files as they are.

const SERVICE = "/longread.v1.AnalysisService/";
const END_STREAM = 0x02;
const $ = (id) => document.getElementById(id);

class ConnectError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details || [];
  }
}

function headers(contentType) {
  const h = { "content-type": contentType, "connect-protocol-version": "1" };
  const key = $("key").value.trim();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

function errorOf(status, body) {
  return new ConnectError(body.code || `http_${status}`, body.message || `HTTP ${status}`, body.details);
}

async function unary(method, request, signal) {
  const res = await fetch(SERVICE + method, {
    method: "POST", headers: headers("application/json"), body: JSON.stringify(request), signal,
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw errorOf(res.status, body);
  return body;
}

async function* serverStream(method, request, signal) {
  const payload = new TextEncoder().encode(JSON.stringify(request));
  const envelope = new Uint8Array(5 + payload.length);
  new DataView(envelope.buffer).setUint32(1, payload.length);
  envelope.set(payload, 5);
  const res = await fetch(SERVICE + method, {
    method: "POST", headers: headers("application/connect+json"), body: envelope, signal,
  });
  if (!res.ok) throw errorOf(res.status, await res.json().catch(() => ({})));
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ConnectError("unavailable", "the stream ended without its end message");
    const joined = new Uint8Array(buf.length + value.length);
    joined.set(buf);
    joined.set(value, buf.length);
    buf = joined;
    while (buf.length >= 5) {
      const flags = buf[0];
      const size = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
      if (buf.length < 5 + size) break;
      const message = JSON.parse(decoder.decode(buf.subarray(5, 5 + size)));
      buf = buf.slice(5 + size);
      if (flags & END_STREAM) {
        if (message.error) throw errorOf(0, message.error);
        return;
      }
      yield message;
    }
  }
}

// ---- the request from the form ----

function request() {
  const req = { document: { text: $("document").value }, instruction: $("instruction").value };
  const model = $("model").value;
  if (model) {
    const [vendor, name] = model.split("/");
    req.model = { vendor, model: name };
  }
  return req;
}

const usd = (cost) => `$${(cost && cost.totalUsd ? cost.totalUsd : 0).toFixed(6)}`;
const modelName = (m) => (m ? `${m.vendor}/${m.model}` : "?");
const strategyName = (s) => (s || "STRATEGY_UNSPECIFIED").replace("STRATEGY_", "").toLowerCase();
const stageName = (s) => (s || "STAGE_UNSPECIFIED").replace("STAGE_", "").toLowerCase();

function showError(e) {
  const box = $("error");
  if (!e) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  if (e.name === "AbortError") return;
  const details = (e.details || []).map((d) => `  ${d.type}${d.debug ? " " + JSON.stringify(d.debug) : ""}`);
  box.textContent = [`${e.code || "error"}: ${e.message}`, ...details].join("\n");
  box.hidden = false;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text;
  row.appendChild(td);
}

function planLine(plan) {
  const chunks = (plan.chunks || []).length;
  return `${strategyName(plan.strategy)} with ${modelName(plan.model)}: ` +
    `${plan.documentTokens || 0} document tokens${plan.tokensExact ? "" : " (estimated)"}, ` +
    `${chunks} chunk${chunks === 1 ? "" : "s"}, estimated ${usd(plan.estimatedCost)}`;
}

// ---- Estimate ----

async function estimate() {
  showError(null);
  busy(true);
  try {
    const res = await unary("Estimate", request());
    $("estimate-out").hidden = false;
    $("estimate-summary").textContent = res.plan ? planLine(res.plan) : "";
    const rows = $("candidates");
    rows.replaceChildren();
    const select = $("model");
    const chosen = select.value;
    select.replaceChildren(new Option("chosen by the gateway", ""));
    for (const fit of res.candidates || []) {
      const tr = document.createElement("tr");
      cell(tr, modelName(fit.model));
      cell(tr, fit.fitsSinglePass ? "yes" : "no");
      cell(tr, String(fit.calls || 0));
      cell(tr, usd(fit.estimatedCost));
      cell(tr, fit.reason || "");
      rows.appendChild(tr);
      select.appendChild(new Option(modelName(fit.model), modelName(fit.model)));
    }
    select.value = chosen;
  } catch (e) {
    showError(e);
  } finally {
    busy(false);
  }
}

// ---- Analyze, streamed ----

let running = null;

function stageRow(stages, name) {
  let row = stages.get(name);
  if (!row) {
    const div = document.createElement("div");
    div.className = "stage";
    div.dataset.stage = name;
    const label = document.createElement("span");
    label.className = "name";
    label.textContent = name;
    const bar = document.createElement("progress");
    bar.value = 0;
    const count = document.createElement("span");
    count.className = "count muted";
    div.append(label, bar, " ", count);
    $("stages").appendChild(div);
    row = { bar, count, done: 0, of: 0 };
    stages.set(name, row);
  }
  return row;
}

function paint(row) {
  row.bar.max = Math.max(row.of, 1);
  row.bar.value = row.done;
  row.count.textContent = `${row.done} of ${row.of}`;
}

async function analyze() {
  showError(null);
  running = new AbortController();
  busy(true);
  $("run-out").hidden = false;
  $("plan").textContent = "planning…";
  $("stages").replaceChildren();
  $("answer").textContent = "";
  $("result").textContent = "";
  const stages = new Map();
  const answerStages = new Set(["single", "reduce", "refine"]);
  try {
    for await (const ev of serverStream("Stream", request(), running.signal)) {
      if (ev.plan) {
        $("plan").textContent = planLine(ev.plan);
      } else if (ev.chunkStarted) {
        const name = stageName(ev.chunkStarted.stage);
        const row = stageRow(stages, name);
        row.of = Math.max(row.of, ev.chunkStarted.of || 1);
        paint(row);
        if (name === "refine") $("answer").textContent = ""; // each step rewrites the answer
      } else if (ev.delta) {
        if (answerStages.has(stageName(ev.delta.stage))) $("answer").textContent += ev.delta.text || "";
      } else if (ev.chunkDone) {
        const row = stageRow(stages, stageName(ev.chunkDone.stage));
        row.done += 1;
        row.of = Math.max(row.of, row.done);
        paint(row);
      } else if (ev.warning) {
        const p = document.createElement("p");
        p.className = "muted";
        p.textContent = `warning ${ev.warning.code}: ${ev.warning.message}`;
        $("stages").appendChild(p);
      } else if (ev.result) {
        const r = ev.result;
        $("answer").textContent = r.text || "";
        const u = r.usage || {};
        $("result").textContent =
          `${modelName(r.model)}; ${u.calls || 0} calls, ${u.inputTokens || 0} input and ` +
          `${u.outputTokens || 0} output tokens; cost ${usd(r.cost)}; ` +
          `cache ${(r.cacheStatus || "").replace("CACHE_STATUS_", "").toLowerCase()}; ` +
          `finish ${r.finishReason || "?"}`;
        document.body.dataset.done = "true";
      }
    }
  } catch (e) {
    showError(e);
  } finally {
    running = null;
    busy(false);
  }
}

function busy(on) {
  $("estimate").disabled = on;
  $("analyze").disabled = on;
  $("cancel").disabled = !running;
  if (on) delete document.body.dataset.done;
}

// ---- wiring ----

function readFile() {
  const file = $("file").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    $("document").value = reader.result;
    sizeNote();
  };
  reader.readAsText(file);
}

function sizeNote() {
  const n = $("document").value.length;
  $("doc-size").textContent = n ? `${n.toLocaleString()} characters` : "";
}

$("estimate").addEventListener("click", estimate);
$("analyze").addEventListener("click", analyze);
$("cancel").addEventListener("click", () => running && running.abort());
$("file").addEventListener("change", readFile);
$("document").addEventListener("input", sizeNote);
// A key may come in the address's fragment (#key=...), which browsers never send to a server.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("key")) $("key").value = fragment.get("key");
document.body.dataset.ready = "true";
