// hallmark's web page. Talks to the server it was served by, with the same API any client uses:
// /v1/models, /v1/chat/completions (streamed), /v1/detect, /v1/provenance/verify, /v1/logs.
// Conversations and settings are kept in this browser (localStorage); the API key only for this
// tab (sessionStorage). Every failure (401, 400, a dropped connection) is shown in the page.
"use strict";

const $ = (id) => document.getElementById(id);
const STORE = { conversations: "hallmark.conversations", current: "hallmark.current", settings: "hallmark.settings" };
const KEY_STORE = "hallmark.apiKey";
const MAX_FILE_BYTES = 2 * 1024 * 1024;  // a text to check; the server's body limit is larger

const app = {
  server: { keyRequired: false, zeroShot: false },
  models: [],
  conversations: [],
  current: null,
  controller: null,  // the AbortController of the answer being streamed
};

// -- messages to the user --------------------------------------------------------------------
function showError(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
  $("banner").className = "error";
}
function clearError() { $("banner").hidden = true; }

class ApiError extends Error {
  constructor(status, message, param) { super(message); this.status = status; this.param = param; }
}

function apiKey() { return sessionStorage.getItem(KEY_STORE) || ""; }

// fetch with the API key; an error answer becomes an ApiError with the server's own message.
async function api(path, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  if (apiKey()) headers["Authorization"] = `Bearer ${apiKey()}`;
  let response;
  try {
    response = await fetch(path, { ...options, headers, body: options.body === undefined ? undefined : JSON.stringify(options.body) });
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new ApiError(0, "Could not reach the server: the connection failed or was dropped.");
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let message = `The server answered ${response.status} ${response.statusText}.`;
  let param = null;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) { message = body.error.message; param = body.error.param; }
  } catch (_) { /* not JSON: keep the status line */ }
  if (response.status === 401) {
    message = apiKey() ? `The API key was refused: ${message}` : `This server needs an API key: ${message}`;
    askForKey();
  }
  return new ApiError(response.status, message, param);
}

function report(error, where) {
  if (error.name === "AbortError") return;
  const prefix = error.status ? `${where} failed (${error.status}): ` : `${where} failed: `;
  showError(prefix + error.message);
}

// -- API key -------------------------------------------------------------------------------------
function askForKey() {
  $("key-button").hidden = false;
  if (!$("key-dialog").open) { $("key-input").value = ""; $("key-dialog").showModal(); }
}
$("key-form").addEventListener("submit", () => {
  sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
  clearError();
  loadModels();
});
$("key-cancel").addEventListener("click", () => $("key-dialog").close());
$("key-button").addEventListener("click", askForKey);

// -- tabs ----------------------------------------------------------------------------------------
const TABS = ["chat", "check", "log"];
function selectTab(name) {
  for (const t of TABS) {
    const on = t === name;
    $(`tab-${t}`).setAttribute("aria-selected", String(on));
    $(`tab-${t}`).tabIndex = on ? 0 : -1;
    $(`view-${t}`).hidden = !on;
  }
  if (name === "log") loadLog();
}
TABS.forEach((t, i) => {
  const tab = $(`tab-${t}`);
  tab.addEventListener("click", () => selectTab(t));
  tab.addEventListener("keydown", (e) => {  // arrow keys move between tabs (WAI-ARIA tabs pattern)
    const step = { ArrowRight: 1, ArrowLeft: -1 }[e.key];
    if (!step) return;
    const next = TABS[(i + step + TABS.length) % TABS.length];
    selectTab(next);
    $(`tab-${next}`).focus();
  });
});
$("banner-close").addEventListener("click", clearError);

// -- server and models -----------------------------------------------------------------------
async function loadServer() {
  try {
    const health = await (await fetch("/health")).json();
    app.server.keyRequired = Boolean(health.api_key_required);
    app.server.zeroShot = Boolean(health.zero_shot);
  } catch (_) {
    showError("Could not reach the server: the connection failed or was dropped.");
  }
  if (app.server.keyRequired) {
    $("key-button").hidden = false;
    if (!apiKey()) { askForKey(); return; }
  }
  await loadModels();
}

async function loadModels() {
  try {
    const body = await (await api("/v1/models")).json();
    app.models = body.data;
  } catch (e) { report(e, "Listing the models"); return; }
  for (const select of [$("model"), $("log-model")]) {
    const keep = select.value;
    select.querySelectorAll("option[data-model]").forEach((o) => o.remove());
    for (const m of app.models) {
      const option = document.createElement("option");
      option.value = m.id;
      option.dataset.model = "1";
      const info = m.hallmark || {};
      option.textContent = m.parent ? `${m.id} (adapter on ${m.parent})` : m.id;
      if (select === $("model") && info.chat_template === false) option.textContent += " (no chat template)";
      select.appendChild(option);
    }
    if (keep && app.models.some((m) => m.id === keep)) select.value = keep;
  }
  const conv = currentConversation();
  if (conv && conv.model && app.models.some((m) => m.id === conv.model)) $("model").value = conv.model;
}

// -- conversations (localStorage) ----------------------------------------------------------------
function load(key, fallback) {
  try { return JSON.parse(localStorage.getItem(key)) ?? fallback; } catch (_) { return fallback; }
}
function saveConversations() {
  try {
    localStorage.setItem(STORE.conversations, JSON.stringify(app.conversations));
    localStorage.setItem(STORE.current, app.current || "");
  } catch (e) { showError(`Could not save the conversations in this browser: ${e.message}`); }
}
function currentConversation() { return app.conversations.find((c) => c.id === app.current); }

function newConversation() {
  const conv = { id: crypto.randomUUID ? crypto.randomUUID() : String(Date.now() + Math.random()), title: "New conversation", model: $("model").value || null, messages: [], created: Date.now() };
  app.conversations.unshift(conv);
  app.current = conv.id;
  saveConversations();
  renderConversations();
  renderMessages();
  $("prompt").focus();
}

function renderConversations() {
  const list = $("conversations");
  list.replaceChildren();
  for (const conv of app.conversations) {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "conv" + (conv.id === app.current ? " current" : "");
    button.textContent = conv.title || "Untitled";
    if (conv.id === app.current) button.setAttribute("aria-current", "true");
    button.addEventListener("click", () => { app.current = conv.id; saveConversations(); renderConversations(); renderMessages(); });
    li.appendChild(button);
    list.appendChild(li);
  }
  const conv = currentConversation();
  $("conv-title").value = conv ? conv.title : "";
  if (conv && conv.model && app.models.some((m) => m.id === conv.model)) $("model").value = conv.model;
}

$("new-chat").addEventListener("click", newConversation);
$("conv-title").addEventListener("change", () => {
  const conv = currentConversation();
  if (!conv) return;
  conv.title = $("conv-title").value.trim().slice(0, 120) || "Untitled";
  saveConversations();
  renderConversations();
});
$("delete-chat").addEventListener("click", () => {
  if (!app.current) return;
  app.conversations = app.conversations.filter((c) => c.id !== app.current);
  app.current = app.conversations.length ? app.conversations[0].id : null;
  saveConversations();
  renderConversations();
  renderMessages();
});
$("model").addEventListener("change", () => {
  const conv = currentConversation();
  if (conv) { conv.model = $("model").value; saveConversations(); }
});

// -- settings --------------------------------------------------------------------------------------
const SETTINGS = { system: "system", temperature: "temperature", top_p: "top-p", max_tokens: "max-tokens", seed: "seed" };
function restoreSettings() {
  const saved = load(STORE.settings, {});
  for (const [name, id] of Object.entries(SETTINGS)) if (saved[name] !== undefined) $(id).value = saved[name];
}
for (const [name, id] of Object.entries(SETTINGS)) {
  $(id).addEventListener("change", () => {
    const saved = load(STORE.settings, {});
    saved[name] = $(id).value;
    localStorage.setItem(STORE.settings, JSON.stringify(saved));
  });
}
function numberSetting(id, integer) {
  const raw = $(id).value.trim();
  if (raw === "") return undefined;
  const value = Number(raw);
  if (!Number.isFinite(value) || (integer && !Number.isInteger(value))) throw new ApiError(0, `${$(id).labels[0].textContent} must be a number, not "${raw}"`);
  return value;
}

// -- messages ------------------------------------------------------------------------------------
function renderMessages() {
  const list = $("messages");
  list.replaceChildren();
  const conv = currentConversation();
  if (!conv) return;
  conv.messages.forEach((m) => list.appendChild(messageNode(m)));
  list.lastElementChild?.scrollIntoView({ block: "end" });
}

function messageNode(message) {
  const li = document.createElement("li");
  li.className = `message ${message.role}`;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = message.role === "user" ? "You" : `${message.model || "model"} (AI)`;
  li.appendChild(who);
  const body = document.createElement("div");
  body.className = "content";
  li.appendChild(body);
  fillMessage(li, message);
  return li;
}

// Re-render one message's content and facts (called for every streamed piece).
function fillMessage(li, message) {
  const body = li.querySelector(".content");
  body.replaceChildren(message.role === "user" ? textBlock(message.content) : Markdown.render(message.content));
  li.querySelector(".facts")?.remove();
  li.querySelector(".error-note")?.remove();
  if (message.error) {
    const note = document.createElement("p");
    note.className = "error-note";
    note.textContent = message.error;
    li.appendChild(note);
  }
  if (message.role === "assistant" && message.hallmark) li.appendChild(factsNode(message));
}

function textBlock(text) {
  const p = document.createElement("p");
  p.className = "plain";
  p.textContent = text;
  return p;
}

// What hallmark says about an answer: disclosure, watermark and spec, provenance manifest.
function factsNode(message) {
  const info = message.hallmark;
  const facts = document.createElement("div");
  facts.className = "facts";
  const disclosure = document.createElement("p");
  disclosure.className = "disclosure";
  disclosure.textContent = info.disclosure || "AI-generated";
  facts.appendChild(disclosure);
  const wm = info.watermark || {};
  const mark = document.createElement("p");
  mark.className = "watermark";
  mark.textContent = wm.applied ? `Watermarked · spec ${wm.spec_id}` : "Not watermarked" + (wm.spec_id ? ` (greedy or turned off; spec ${wm.spec_id})` : "");
  facts.appendChild(mark);
  const manifest = Array.isArray(info.provenance) ? info.provenance[0] : null;
  if (manifest) {
    const link = document.createElement("button");
    link.type = "button";
    link.className = "link";
    link.textContent = "Provenance manifest: verify it in Check";
    link.addEventListener("click", () => {
      $("check-text").value = message.content;
      $("manifest").value = JSON.stringify(manifest, null, 2);
      selectTab("check");
      verifyManifest();
    });
    facts.appendChild(link);
  }
  if (message.finish_reason === "length") {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "Cut at the max-tokens limit (Settings).";
    facts.appendChild(note);
  }
  if (message.stopped) {
    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "Stopped before the end.";
    facts.appendChild(note);
  }
  return facts;
}

// -- sending and streaming -----------------------------------------------------------------------
$("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
$("prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
});
$("stop").addEventListener("click", () => app.controller?.abort());
$("regenerate").addEventListener("click", () => {
  const conv = currentConversation();
  if (!conv || app.controller) return;
  while (conv.messages.length && conv.messages[conv.messages.length - 1].role === "assistant") conv.messages.pop();
  if (!conv.messages.length) return;
  renderMessages();
  answer(conv);
});

function send() {
  const text = $("prompt").value;
  if (!text.trim() || app.controller) return;
  if (!$("model").value) { showError("No model to send to: the model list could not be loaded."); return; }
  if (!currentConversation()) newConversation();
  const conv = currentConversation();
  if (!conv.messages.length && conv.title === "New conversation") conv.title = text.trim().slice(0, 60);
  conv.model = $("model").value;
  conv.messages.push({ role: "user", content: text });
  $("prompt").value = "";
  saveConversations();
  renderConversations();
  renderMessages();
  answer(conv);
}

async function answer(conv) {
  clearError();
  let request;
  try {
    request = {
      model: $("model").value,
      messages: [
        ...($("system").value.trim() ? [{ role: "system", content: $("system").value }] : []),
        ...conv.messages.map((m) => ({ role: m.role, content: m.content })),
      ],
      stream: true,
      temperature: numberSetting("temperature"),
      top_p: numberSetting("top-p"),
      max_tokens: numberSetting("max-tokens", true),
      seed: numberSetting("seed", true),
    };
  } catch (e) { showError(e.message); return; }
  const message = { role: "assistant", content: "", model: request.model };
  conv.messages.push(message);
  const li = messageNode(message);
  li.setAttribute("aria-busy", "true");
  $("messages").appendChild(li);
  app.controller = new AbortController();
  $("stop").disabled = false;
  $("send").disabled = true;
  try {
    const response = await api("/v1/chat/completions", { method: "POST", body: request, signal: app.controller.signal });
    await readStream(response, (chunk) => {
      if (chunk.error) throw new ApiError(chunk.error.code || 500, chunk.error.message);
      if (chunk.hallmark) message.hallmark = chunk.hallmark;
      for (const choice of chunk.choices || []) {
        if (choice.delta && choice.delta.content) message.content += choice.delta.content;
        if (choice.finish_reason) message.finish_reason = choice.finish_reason;
      }
      fillMessage(li, message);
      li.scrollIntoView({ block: "end" });
    });
  } catch (e) {
    if (e.name === "AbortError") message.stopped = true;
    else {
      message.error = e.status === 0 || e.status === undefined ? `The answer was cut off: ${e.message}` : e.message;
      report(e, "The answer");
    }
  } finally {
    app.controller = null;
    $("stop").disabled = true;
    $("send").disabled = false;
    li.removeAttribute("aria-busy");
    if (!message.content && !message.stopped && message.error) conv.messages.pop(); // nothing to keep
    else fillMessage(li, message);
    if (!conv.messages.includes(message)) { li.remove(); }
    saveConversations();
  }
}

// Server-sent events: `data: {...}` lines, ending with `data: [DONE]`.
async function readStream(response, onChunk) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let done = false;
  for (;;) {
    let part;
    try { part = await reader.read(); } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new ApiError(0, "the connection to the server was dropped");
    }
    if (part.done) break;
    buffer += decoder.decode(part.value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") { done = true; continue; }
        onChunk(JSON.parse(data));
      }
    }
  }
  if (!done) throw new ApiError(0, "the connection to the server was dropped before the answer ended");
}

// -- check a text --------------------------------------------------------------------------------
$("check-form").addEventListener("submit", (e) => { e.preventDefault(); checkText(); });
$("check-file").addEventListener("change", () => { if ($("check-file").files[0]) readFile($("check-file").files[0]); });
$("check-text").addEventListener("dragover", (e) => e.preventDefault());
$("check-text").addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files[0]) readFile(e.dataTransfer.files[0]);
});

async function readFile(file) {
  if (file.size > MAX_FILE_BYTES) { showError(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB; the page checks texts up to ${MAX_FILE_BYTES / 1e6} MB.`); return; }
  $("check-text").value = await file.text();
  clearError();
}

async function checkText() {
  const text = $("check-text").value;
  if (!text.trim()) { showError("Paste a text to check first."); return; }
  clearError();
  $("check-run").disabled = true;
  $("check-run").textContent = "Checking…";
  try {
    const fpr = Number($("check-fpr").value);
    const body = { text, token_scores: true, ...(Number.isFinite(fpr) && fpr > 0 ? { fpr } : {}) };
    const result = await (await api("/v1/detect", { method: "POST", body })).json();
    showDetection(text, result);
  } catch (e) { report(e, "Checking the text"); }
  finally { $("check-run").disabled = false; $("check-run").textContent = "Check"; }
}

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

function formatP(p) { return p >= 0.001 ? p.toPrecision(3) : p.toExponential(2); }

function showDetection(text, r) {
  $("check-result").hidden = false;
  const verdict = $("wm-verdict");
  verdict.textContent = r.verdict === "watermarked" ? "Watermarked" : r.verdict === "too_short" ? "Too short to decide" : "No watermark found";
  verdict.className = `verdict ${r.verdict}`;
  const facts = $("wm-facts");
  facts.replaceChildren();
  fact(facts, "p-value (exact)", formatP(r.p_value));
  fact(facts, "Decision", r.message);
  if (r.model) fact(facts, "Model (tokenizer)", r.model);
  fact(facts, "Watermark spec", r.spec_id);
  fact(facts, "Tokens scored", `${r.scored} of ${r.tokens}`);
  fact(facts, "Watermarked passages", String(r.spans.length));
  highlight(text, r.spans);
  plot(r.token_scores || [], r.spans);
  const zs = r.zero_shot;
  $("zs-section").hidden = !zs;
  if (zs) {
    $("zs-verdict").textContent = zs.message;
    $("zs-verdict").className = `verdict ${zs.assessment}`;
    $("zs-caveat").textContent = `This is ${zs.caveat}.`;
  }
}

// The text with each watermarked passage in a <mark>.
function highlight(text, spans) {
  const out = $("check-highlight");
  out.replaceChildren();
  let at = 0;
  for (const span of spans) {
    if (span.start > at) out.appendChild(document.createTextNode(text.slice(at, span.start)));
    const mark = document.createElement("mark");
    mark.className = "wm";
    mark.title = `watermarked passage: ${span.tokens} tokens, p = ${formatP(span.p_value)}`;
    mark.textContent = text.slice(span.start, span.end);
    out.appendChild(mark);
    at = span.end;
  }
  if (at < text.length) out.appendChild(document.createTextNode(text.slice(at)));
  const first = out.querySelector("mark");
  out.scrollTop = first ? Math.max(0, first.offsetTop - out.offsetTop - 24) : 0;  // show the first passage
}

// A moving average of the per-token scores along the text, as an SVG line; watermarked passages shaded.
function plot(scores, spans) {
  const svg = $("score-plot");
  svg.replaceChildren();
  const ns = "http://www.w3.org/2000/svg";
  const W = 600, H = 140;
  const line = (x1, y1, x2, y2, cls) => {
    const l = document.createElementNS(ns, "line");
    Object.entries({ x1, y1, x2, y2 }).forEach(([k, v]) => l.setAttribute(k, v));
    l.setAttribute("class", cls);
    svg.appendChild(l);
  };
  if (scores.length < 2) return;
  const window = Math.max(4, Math.min(32, Math.floor(scores.length / 8)));
  const z = scores.map((s) => s[2]);
  const avg = z.map((_, i) => {
    const lo = Math.max(0, i - window + 1);
    const part = z.slice(lo, i + 1);
    return part.reduce((a, b) => a + b, 0) / part.length;
  });
  const top = Math.max(2, ...avg), bottom = Math.min(-2, ...avg);
  const y = (v) => H - ((v - bottom) / (top - bottom)) * H;
  const x = (i) => (i / (avg.length - 1)) * W;
  for (const span of spans) {  // the tokens inside each passage, by character offsets
    const inside = scores.map((s, i) => (s[0] >= span.start && s[1] <= span.end ? i : -1)).filter((i) => i >= 0);
    if (!inside.length) continue;
    const rect = document.createElementNS(ns, "rect");
    const x0 = x(inside[0]), x1 = x(inside[inside.length - 1]);
    Object.entries({ x: x0, y: 0, width: Math.max(1, x1 - x0), height: H, class: "passage" }).forEach(([k, v]) => rect.setAttribute(k, v));
    svg.appendChild(rect);
  }
  line(0, y(0), W, y(0), "axis");
  line(0, y(1), W, y(1), "threshold");
  const path = document.createElementNS(ns, "polyline");
  path.setAttribute("points", avg.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" "));
  path.setAttribute("class", "score");
  svg.appendChild(path);
}

// -- provenance --------------------------------------------------------------------------------------
$("verify-form").addEventListener("submit", (e) => { e.preventDefault(); verifyManifest(); });

async function verifyManifest() {
  const raw = $("manifest").value.trim();
  if (!raw) { showError("Paste a manifest to verify."); return; }
  let manifest;
  try { manifest = JSON.parse(raw); } catch (e) { showError(`The manifest is not valid JSON: ${e.message}`); return; }
  clearError();
  try {
    const r = await (await api("/v1/provenance/verify", { method: "POST", body: { text: $("check-text").value, manifest } })).json();
    $("verify-result").hidden = false;
    $("verify-verdict").textContent = r.ok ? `Verified: ${r.message}` : `Not verified: ${r.message}`;
    $("verify-verdict").className = `verdict ${r.ok ? "verified" : "failed"}`;
    const list = $("verify-checks");
    list.replaceChildren();
    for (const c of r.checks) {
      const li = document.createElement("li");
      li.className = c.status;
      li.textContent = `${c.name}: ${c.status} — ${c.detail}`;
      list.appendChild(li);
    }
  } catch (e) { report(e, "Verifying the manifest"); }
}

// -- log ---------------------------------------------------------------------------------------------
$("log-filters").addEventListener("submit", (e) => { e.preventDefault(); loadLog(); });

async function loadLog() {
  const params = new URLSearchParams({ limit: "100" });
  if ($("log-model").value) params.set("model", $("log-model").value);
  if ($("log-status").value) params.set("status", $("log-status").value);
  for (const [name, id] of [["since", "log-since"], ["until", "log-until"]]) {
    if ($(id).value) params.set(name, String(new Date($(id).value).getTime() / 1000));
  }
  let rows;
  try { rows = (await (await api(`/v1/logs?${params}`)).json()).data; } catch (e) { report(e, "Reading the log"); return; }
  const body = $("log-table").querySelector("tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = document.createElement("tr");
    tr.tabIndex = 0;
    tr.className = r.status;
    const cells = [
      new Date(r.created * 1000).toLocaleString(),
      r.model || "-",
      `${r.status} (${r.http_status})`,
      `${r.prompt_tokens ?? "-"} + ${r.completion_tokens ?? "-"}`,
      r.duration_ms == null ? "-" : Math.round(r.duration_ms),
      r.error || r.output || "",
    ];
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.appendChild(td); }
    const open = () => showLogRow(r.id);
    tr.addEventListener("click", open);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") open(); });
    body.appendChild(tr);
  }
  if (!rows.length) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.textContent = "No requests match.";
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function showLogRow(id) {
  try {
    const row = await (await api(`/v1/logs/${encodeURIComponent(id)}`)).json();
    $("log-detail").hidden = false;
    $("log-detail-title").textContent = `Request ${row.id}`;
    $("log-detail-body").textContent = JSON.stringify(row, null, 2);
    $("log-detail").scrollIntoView({ block: "start" });
  } catch (e) { report(e, "Reading the request"); }
}

// -- start -------------------------------------------------------------------------------------------
app.conversations = load(STORE.conversations, []);
if (!Array.isArray(app.conversations)) app.conversations = [];
app.current = localStorage.getItem(STORE.current) || (app.conversations[0] && app.conversations[0].id) || null;
restoreSettings();
renderConversations();
renderMessages();
loadServer();
