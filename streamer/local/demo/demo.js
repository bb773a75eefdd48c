// The demo page of `streamer dev`: plain DOM code on top of the TypeScript client (/client/,
// clients/js/dist). Everything the server says is shown with textContent, never as HTML.
import { StreamerClient, StreamerError } from "/client/index.js";

const EXAMPLES = {
  echo: { message: "hello" },
  echo_async: { message: "hi" },
  delay: { seconds: 5, steps: 10 },
  generate_report: { start_date: "2026-01-01", end_date: "2026-01-31", format: "pdf", report_type: "sales" },
  process_data: { dataset_id: "ds-1", operation: "aggregate" },
  validate_user: { name: "Ann", email: "ann@example.com" },
  bulk_operation: { items: [1, "two", { three: 3 }] },
  knowledge_query: { query: "What is async processing?" },
};

const $ = (id) => document.getElementById(id);
const state = { client: undefined, actions: new Map(), config: undefined, cards: new Map() };

function setState(value) {
  const el = $("state");
  el.dataset.state = value;
  el.textContent = value;
}

async function fetchJson(path, init) {
  const resp = await fetch(path, init);
  if (!resp.ok) throw new Error(`${path}: HTTP ${resp.status} ${await resp.text()}`);
  return resp.json();
}

function describeError(err) {
  if (err instanceof StreamerError) return { code: err.code, message: err.message };
  return { code: "ERROR", message: err instanceof Error ? err.message : String(err) };
}

// ------------------------------------------------------------------ actions
function pickAction(name) {
  const action = state.actions.get(name);
  if (!action) return;
  $("action").value = name;
  $("action-description").textContent = `${action.mode}${action.timeout ? `, timeout ${action.timeout}` : ""} — ${action.description || ""}`;
  $("schema").textContent = JSON.stringify(action.payloadSchema ?? {}, null, 2);
  $("payload").value = JSON.stringify(EXAMPLES[name] ?? {}, null, 2);
  for (const li of $("actions").children) li.setAttribute("aria-selected", String(li.dataset.action === name));
}

async function loadActions() {
  const { actions } = await fetchJson("/api/actions");
  const list = $("actions");
  const select = $("action");
  list.replaceChildren();
  select.replaceChildren();
  for (const action of actions) {
    state.actions.set(action.name, action);
    const li = document.createElement("li");
    li.dataset.action = action.name;
    li.tabIndex = 0;
    const name = document.createElement("strong");
    name.textContent = action.name;
    const mode = document.createElement("span");
    mode.className = "mode";
    mode.textContent = action.mode;
    const desc = document.createElement("div");
    desc.className = "note";
    desc.textContent = action.description || "";
    li.append(name, mode, desc);
    li.addEventListener("click", () => pickAction(action.name));
    li.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter") pickAction(action.name);
    });
    list.append(li);
    const option = document.createElement("option");
    option.value = option.textContent = action.name;
    select.append(option);
  }
  pickAction(state.actions.has("echo") ? "echo" : actions[0]?.name);
}

// ------------------------------------------------------------------ connection
async function devToken(user, tenant) {
  const { token } = await fetchJson("/api/token", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user, tenant }),
  });
  return token;
}

async function connectAs(user, tenant) {
  state.client?.close();
  for (const card of state.cards.values()) card.el.remove();
  state.cards.clear();
  $("send").disabled = $("follow").disabled = true;
  $("who-note").textContent = "";
  const client = new StreamerClient(state.config.ws_url, {
    token: () => devToken(user, tenant), // asked again on every reconnect
    reconnectDelayMs: 200,
    reconnectMaxDelayMs: 3000,
    maxReconnectAttempts: null,
    onStateChange: setState,
  });
  state.client = client;
  try {
    await client.connect();
  } catch (err) {
    const { code, message } = describeError(err);
    $("who-note").textContent = `Could not connect: ${code}: ${message}`;
    setState("closed");
    return;
  }
  $("who-note").textContent = `Connected as ${user} of tenant ${tenant}.`;
  $("send").disabled = $("follow").disabled = false;
  history.replaceState(null, "", `?${new URLSearchParams({ user, tenant })}`);
}

// ------------------------------------------------------------------ request cards
function newCard(requestId, action) {
  const el = $("request-template").content.firstElementChild.cloneNode(true);
  el.dataset.requestId = requestId;
  el.querySelector(".action").textContent = action ?? "(followed)";
  el.querySelector(".id").textContent = requestId;
  $("requests").prepend(el);
  const card = { el, requestId, done: false };
  state.cards.set(requestId, card);
  return card;
}

function setStatus(card, status) {
  card.el.dataset.status = status;
  card.el.querySelector(".status").textContent = status;
}

function setPercentage(card, pct) {
  const value = Math.max(0, Math.min(100, Number(pct) || 0));
  card.el.querySelector(".bar").value = value;
  card.el.querySelector(".pct").textContent = `${Math.round(value)}%`;
}

function addLine(card, text) {
  const li = document.createElement("li");
  li.textContent = text;
  const list = card.el.querySelector(".messages");
  list.append(li);
  list.scrollTop = list.scrollHeight;
}

function showEvent(card, msg) {
  switch (msg.type) {
    case "acknowledgment":
      setStatus(card, "PENDING");
      addLine(card, `queued: ${msg.message}`);
      break;
    case "progress":
      setStatus(card, "PROCESSING");
      setPercentage(card, msg.percentage);
      addLine(card, `[${String(Math.round(msg.percentage)).padStart(3)}%] ${msg.message}`);
      break;
    case "status":
      if (msg.action) card.el.querySelector(".action").textContent = msg.action;
      setStatus(card, msg.status);
      setPercentage(card, msg.percentage);
      addLine(card, `status ${msg.status}${msg.resumed ? " (resumed)" : ""}: ${msg.message}`);
      break;
    default:
      break;
  }
}

function showOutcome(card, result, error) {
  card.done = true;
  card.el.querySelector(".cancel").disabled = true;
  if (error) {
    const { code, message } = describeError(error);
    setStatus(card, code === "CANCELLED" ? "CANCELLED" : "FAILED");
    const box = card.el.querySelector(".error");
    box.querySelector(".code").textContent = code;
    box.querySelector(".error-message").textContent = message;
    box.hidden = false;
    if (error.details !== undefined) addLine(card, `details: ${JSON.stringify(error.details)}`);
    return;
  }
  setStatus(card, "COMPLETED");
  setPercentage(card, 100);
  const pre = card.el.querySelector(".result");
  pre.textContent = JSON.stringify(result, null, 2);
  pre.hidden = false;
}

async function follow(card, handle) {
  const cancel = card.el.querySelector(".cancel");
  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const answer = await handle.cancel();
      addLine(card, `cancel: ${answer.type === "status" ? answer.status : answer.error.code}`);
    } catch (err) {
      const { code, message } = describeError(err);
      addLine(card, `cancel refused: ${code}: ${message}`);
      cancel.disabled = card.done;
    }
  });
  const events = (async () => {
    for await (const msg of handle.events()) showEvent(card, msg);
  })();
  try {
    showOutcome(card, await handle.result());
  } catch (err) {
    showOutcome(card, undefined, err);
  }
  await events;
}

// ------------------------------------------------------------------ forms
function onSend(ev) {
  ev.preventDefault();
  $("send-error").textContent = "";
  let payload;
  try {
    payload = JSON.parse($("payload").value || "{}");
  } catch (err) {
    $("send-error").textContent = `The payload is not JSON: ${err.message}`;
    return;
  }
  if (!payload || typeof payload !== "object" || Array.isArray(payload)) {
    $("send-error").textContent = "The payload must be a JSON object.";
    return;
  }
  const action = $("action").value;
  const id = $("request-id").value.trim() || undefined;
  let handle;
  try {
    handle = state.client.start(action, payload, { id });
  } catch (err) {
    const { code, message } = describeError(err);
    $("send-error").textContent = `${code}: ${message}`;
    return;
  }
  $("request-id").value = "";
  void follow(newCard(handle.requestId, action), handle);
}

async function onFollow(ev) {
  ev.preventDefault();
  $("follow-error").textContent = "";
  const id = $("follow-id").value.trim();
  if (!id) return;
  try {
    const handle = await state.client.subscribe(id);
    const card = state.cards.get(id) ?? newCard(id, handle.action);
    $("follow-id").value = "";
    void follow(card, handle);
  } catch (err) {
    const { code, message } = describeError(err);
    $("follow-error").textContent = `${code}: ${message}`;
  }
}

async function main() {
  state.config = await fetchJson("/api/config");
  $("ws-url").textContent = state.config.ws_url;
  const params = new URLSearchParams(location.search);
  $("user").value = params.get("user") || $("user").value;
  $("tenant").value = params.get("tenant") || $("tenant").value;
  $("action").addEventListener("change", () => pickAction($("action").value));
  $("send-form").addEventListener("submit", onSend);
  $("follow-form").addEventListener("submit", onFollow);
  $("who").addEventListener("submit", (ev) => {
    ev.preventDefault();
    void connectAs($("user").value.trim() || "dev-user", $("tenant").value.trim() || "dev-tenant");
  });
  await loadActions();
  if (!state.config.dev_tokens) {
    $("who-note").textContent = "This stack has no development secret, so the page cannot make tokens.";
    setState("closed");
    return;
  }
  await connectAs($("user").value, $("tenant").value);
}

main().catch((err) => {
  $("who-note").textContent = `The page could not start: ${err.message}`;
  setState("closed");
});
