// Switchboard's chat page: plain JavaScript over the server's own API (no build step).
// Every piece of text from a person or a model goes into the page with textContent, never as
// HTML. Every request gets its headers from requestHeaders(), the one place a key is added.
"use strict";

const KEY_STORAGE = "switchboard.apiKey";
const USER_STORAGE = "switchboard.userId";
const AGENT_STORAGE = "switchboard.agentId";
const PAGE = 200; // the API's largest page

const state = {
  agents: [],
  users: [],
  agentId: null,
  userId: null,
  conversationId: null,
  turn: null, // {controller, runId, conversationId, stopped, started} while an answer streams
};

const $ = (id) => document.getElementById(id);

// -- requests ------------------------------------------------------------------------------

/** The headers of every request: the API key (when one is saved) and any extras. */
function requestHeaders(extra = {}) {
  const headers = { Accept: "application/json", ...extra };
  const key = localStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  return headers;
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail) && detail.length) {
      return detail
        .map((item) => `${(item.loc || []).slice(1).join(".") || "request"}: ${item.msg}`)
        .join("; ");
    }
  } catch (_) {
    // not JSON: fall through
  }
  return `${response.status} ${response.statusText}`;
}

/** A JSON request to the API; throws ApiError with the server's message on failure. */
async function api(path, { method = "GET", json, body, signal } = {}) {
  const extra = json === undefined ? {} : { "Content-Type": "application/json" };
  const response = await fetch(path, {
    method,
    headers: requestHeaders(extra),
    body: json === undefined ? body : JSON.stringify(json),
    signal,
  });
  if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
  if (response.status === 204) return null;
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** The events of an SSE response body: {event, data} with data parsed from JSON. */
async function* sseEvents(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let event = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // a heartbeat comment
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") event = value;
          else if (field === "data") data.push(value);
        }
        if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
      }
    }
  } finally {
    reader.cancel().catch(() => {}); // a reader left early lets go of the connection
  }
}

// -- DOM helpers ---------------------------------------------------------------------------

/** An element with attributes and children; strings become text nodes (never HTML). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function say(message, kind = "info") {
  const status = $("status");
  status.textContent = message;
  status.dataset.kind = kind;
}

/** The server wants a key (401): open the key form and say so. */
function askForKey() {
  document.querySelector("details.settings").open = true;
  $("api-key").focus();
  say("This server needs an API key: paste yours under “API key” and save it.", "error");
}

function fail(error) {
  if (error && error.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    askForKey();
    return;
  }
  say(error instanceof Error ? error.message : String(error), "error");
}

function shortDate(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString();
}

function scrollToEnd() {
  const log = $("log");
  log.scrollTop = log.scrollHeight;
}

// -- agents and users ----------------------------------------------------------------------

function currentAgent() {
  return state.agents.find((agent) => agent.id === state.agentId) || null;
}

function describeAgent() {
  const agent = currentAgent();
  const about = agent
    ? [agent.description, agent.tools.length ? `tools: ${agent.tools.join(", ")}` : "no tools"]
        .filter(Boolean)
        .join(" · ")
    : "";
  $("agent-about").textContent = about;
}

async function loadAgents() {
  const page = await api(`/agents?limit=${PAGE}`);
  state.agents = page.items;
  const select = $("agent");
  select.replaceChildren(
    ...state.agents.map((agent) =>
      el("option", { value: agent.id }, `${agent.name} (${agent.graph_id})`),
    ),
  );
  const saved = localStorage.getItem(AGENT_STORAGE);
  const chat = state.agents.find((a) => a.graph_id === "chat" && a.metadata.created_by === "system");
  const pick = state.agents.find((a) => a.id === saved) || chat || state.agents[0];
  state.agentId = pick ? pick.id : null;
  if (pick) select.value = pick.id;
  describeAgent();
}

async function loadUsers() {
  const page = await api(`/users?limit=${PAGE}`);
  state.users = page.items;
  const select = $("user");
  select.replaceChildren(
    ...state.users.map((user) => el("option", { value: user.id }, `${user.name} <${user.email}>`)),
  );
  const saved = localStorage.getItem(USER_STORAGE);
  const pick = state.users.find((u) => u.id === saved) || state.users[0];
  state.userId = pick ? pick.id : null;
  if (pick) select.value = pick.id;
}

function askForUser() {
  $("user-form").reset();
  $("user-dialog").showModal();
  $("user-name").focus();
}

async function createUser(event) {
  event.preventDefault();
  const name = $("user-name").value.trim();
  const email = $("user-email").value.trim();
  if (!name || !email) return;
  try {
    const user = await api("/users", { method: "POST", json: { name, email } });
    localStorage.setItem(USER_STORAGE, user.id);
    $("user-dialog").close();
    newConversation();
    await loadUsers();
    await refreshSide();
    say(`Hello, ${user.name}.`);
  } catch (error) {
    fail(error);
  }
}

// -- conversations -------------------------------------------------------------------------

async function loadConversations() {
  const list = $("conversations");
  if (!state.userId || !state.agentId) {
    list.replaceChildren();
    return;
  }
  const query = new URLSearchParams({ user_id: state.userId, agent_id: state.agentId, limit: "50" });
  const page = await api(`/conversations?${query}`);
  list.replaceChildren(
    ...page.items.map((conversation) => {
      const current = conversation.id === state.conversationId;
      const button = el(
        "button",
        {
          type: "button",
          className: "conversation",
          "aria-current": current ? "true" : null,
          "data-id": conversation.id,
          onclick: () => openConversation(conversation.id).catch(fail),
        },
        el("span", { className: "title" }, conversation.title || "Untitled"),
        el("span", { className: "muted small" }, shortDate(conversation.updated_at)),
      );
      return el("li", {}, button);
    }),
  );
}

function setTitle(text) {
  $("chat-title").textContent = text;
}

function newConversation() {
  state.conversationId = null;
  history.replaceState(null, "", location.pathname);
  $("log").replaceChildren();
  setTitle("New conversation");
  loadConversations().catch(fail);
  $("message").focus();
}

async function openConversation(id) {
  const conversation = await api(`/conversations/${encodeURIComponent(id)}`);
  if (conversation.agent_id && conversation.agent_id !== state.agentId) {
    state.agentId = conversation.agent_id;
    $("agent").value = conversation.agent_id;
    describeAgent();
  }
  state.conversationId = conversation.id;
  history.replaceState(null, "", `#conversation=${conversation.id}`);
  setTitle(conversation.title || "Untitled");
  const page = await api(
    `/conversations/${encodeURIComponent(id)}/messages?limit=${PAGE}&order=desc`,
  );
  const log = $("log");
  log.replaceChildren(...page.items.reverse().map(renderStored));
  scrollToEnd();
  await loadConversations();
}

function renderStored(message) {
  const meta = message.metadata || {};
  if (message.sender === "user") return userBubble(message.content);
  if (message.sender === "tool") {
    const item = toolItem(meta.tool || "tool", meta.args || {});
    finishTool(item, meta.status, message.content);
    return el("div", { className: "tools stored" }, item.node);
  }
  const bubble = agentBubble();
  bubble.text.data = message.content;
  if (Array.isArray(meta.citations)) showCitations(bubble, meta.citations);
  bubble.node.classList.remove("streaming");
  return bubble.node;
}

// -- rendering a turn ----------------------------------------------------------------------

function userBubble(text) {
  return el(
    "article",
    { className: "message user", "aria-label": "You" },
    el("p", { className: "text" }, text),
  );
}

function agentBubble() {
  const agent = currentAgent();
  const text = document.createTextNode("");
  const body = el("p", { className: "text answer" }, text);
  const tools = el("div", { className: "tools" });
  const notes = el("div", { className: "notes" });
  const sources = el("div", { className: "sources" });
  const node = el(
    "article",
    { className: "message agent streaming", "aria-label": agent ? agent.name : "Agent" },
    tools,
    body,
    sources,
    notes,
  );
  return { node, text, tools, notes, sources, toolItems: new Map() };
}

function formatArgs(args) {
  const entries = Object.entries(args || {});
  if (entries.length === 1 && typeof entries[0][1] !== "object") return String(entries[0][1]);
  return JSON.stringify(args);
}

function toolItem(name, args) {
  const result = el("pre", { className: "tool-result" }, "…");
  const label = el("span", { className: "tool-status" }, "running");
  const node = el(
    "details",
    { className: "tool" },
    el("summary", {}, "Tool ", el("code", {}, name), " ", el("code", {}, formatArgs(args)), " ", label),
    result,
  );
  return { node, result, label };
}

function finishTool(item, status, content) {
  item.label.textContent = status === "error" ? "failed" : "done";
  item.node.dataset.status = status || "success";
  item.result.textContent = content;
}

function showSources(bubble, sources) {
  if (!sources.length) return;
  const list = el(
    "ol",
    {},
    ...sources.map((source) =>
      el("li", { value: source.n }, `${source.title || source.source}`, el("span", { className: "muted" }, ` — ${source.source}`)),
    ),
  );
  bubble.sources.replaceChildren(
    el("details", { className: "consulted" }, el("summary", {}, `Consulted ${sources.length} passage(s)`), list),
  );
}

function showCitations(bubble, citations) {
  if (!citations.length) return;
  const list = el(
    "ol",
    { className: "citations" },
    ...citations.map((source) =>
      el(
        "li",
        { className: "citation", value: source.n },
        el("strong", {}, source.title || source.source),
        el("span", { className: "muted" }, ` — ${source.source}`),
        source.snippet ? el("q", { className: "snippet" }, source.snippet) : null,
      ),
    ),
  );
  bubble.sources.replaceChildren(el("h3", { className: "small" }, "Sources"), list);
}

function note(bubble, text, kind = "info") {
  bubble.notes.append(el("p", { className: `note ${kind}` }, text));
}

function applyEvent(bubble, event, data) {
  switch (event) {
    case "metadata":
      if (state.turn) {
        state.turn.runId = data.run_id;
        state.turn.conversationId = data.conversation_id;
      }
      if (!state.conversationId) {
        state.conversationId = data.conversation_id;
        history.replaceState(null, "", `#conversation=${data.conversation_id}`);
        loadConversations().catch(fail);
      }
      break;
    case "sources":
      showSources(bubble, data.sources || []);
      break;
    case "tool_call": {
      const item = toolItem(data.name, data.args);
      bubble.toolItems.set(data.id, item);
      bubble.tools.append(item.node);
      break;
    }
    case "tool_result": {
      let item = bubble.toolItems.get(data.id);
      if (!item) {
        item = toolItem(data.name, data.args);
        bubble.tools.append(item.node);
      }
      finishTool(item, data.status, data.content);
      break;
    }
    case "token":
      bubble.text.appendData(data.text);
      break;
    case "message":
      bubble.text.data = data.content;
      showCitations(bubble, data.citations || []);
      break;
    case "warning":
      note(bubble, data.message, "warning");
      break;
    case "memory_saved":
      note(bubble, `Remembered: ${data.text}`);
      break;
    case "step_limit":
      note(bubble, `Stopped after ${data.steps} tool rounds (the limit).`, "warning");
      break;
    case "error":
      note(bubble, data.message || "The turn failed.", "error");
      break;
    default:
      break; // plan, memories, end: nothing to show
  }
  scrollToEnd();
}

function setBusy(busy) {
  $("send").disabled = busy;
  $("stop").disabled = !busy;
  $("log").setAttribute("aria-busy", busy ? "true" : "false");
}

async function send(event) {
  event.preventDefault();
  const box = $("message");
  const message = box.value.trim();
  if (!message || state.turn) return;
  if (!state.userId) {
    askForUser();
    return;
  }
  if (!state.agentId) {
    say("There is no agent to talk to: create one first (POST /agents).", "error");
    return;
  }
  const body = state.conversationId
    ? { conversation_id: state.conversationId, message }
    : { user_id: state.userId, agent_id: state.agentId, message, title: message.slice(0, 80) };
  if (!state.conversationId) setTitle(body.title);
  const log = $("log");
  const bubble = agentBubble();
  log.append(userBubble(message), bubble.node);
  box.value = "";
  scrollToEnd();
  const controller = new AbortController();
  let started;
  const turn = {
    controller,
    runId: null,
    conversationId: state.conversationId,
    stopped: false,
    started: new Promise((resolve) => (started = resolve)), // resolved once the run is known
  };
  state.turn = turn;
  setBusy(true);
  say("");
  try {
    const response = await fetch("/chat", {
      method: "POST",
      headers: requestHeaders({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) throw new ApiError(response.status, await errorMessage(response));
    for await (const item of sseEvents(response)) {
      // Once Stop is pressed the turn's outcome is "Stopped.", whatever the run still sends
      // (its cancellation arrives as an error event): only its id is still wanted.
      if (turn.stopped && item.event !== "metadata") break;
      applyEvent(bubble, item.event, item.data);
      if (item.event === "metadata") started();
      if (turn.stopped) break;
    }
  } catch (error) {
    if (!turn.stopped) {
      note(bubble, error.message || String(error), "error");
      fail(error);
    }
  } finally {
    started();
    if (turn.stopped) note(bubble, "Stopped.", "warning");
    bubble.node.classList.remove("streaming");
    state.turn = null;
    setBusy(false);
    refreshSide().catch(fail);
    box.focus();
  }
}

async function stop() {
  const turn = state.turn;
  if (!turn || turn.stopped) return;
  turn.stopped = true;
  $("stop").disabled = true;
  try {
    await turn.started; // a Stop pressed before the run's first event waits for its id
    if (turn.runId && turn.conversationId) {
      const thread = encodeURIComponent(turn.conversationId);
      const run = encodeURIComponent(turn.runId);
      await api(`/threads/${thread}/runs/${run}/cancel`, { method: "POST" });
    }
  } catch (error) {
    fail(error);
  } finally {
    turn.controller.abort();
  }
}

// -- documents and memories ----------------------------------------------------------------

async function loadDocuments() {
  const collection = $("collection").value.trim();
  if (!$("collection").checkValidity()) return;
  const page = await api(`/documents?collection=${encodeURIComponent(collection)}&limit=50`);
  $("documents").replaceChildren(
    ...page.items.map((doc) =>
      el(
        "li",
        {},
        el("span", { className: "grow" }, doc.title || doc.source, el("span", { className: "muted small" }, ` ${doc.chunk_count} chunk(s)`)),
        el(
          "button",
          {
            type: "button",
            className: "link danger",
            "aria-label": `Delete document ${doc.source}`,
            onclick: () => deleteDocument(doc).catch(fail),
          },
          "Delete",
        ),
      ),
    ),
  );
}

async function upload(event) {
  event.preventDefault();
  const input = $("file");
  const file = input.files && input.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  form.append("collection", $("collection").value.trim());
  $("upload").disabled = true;
  say(`Uploading ${file.name}…`);
  try {
    const doc = await api("/documents", { method: "POST", body: form });
    say(`${doc.source}: ${doc.status}, ${doc.chunk_count} chunk(s) in ${doc.collection}.`);
    input.value = "";
    await loadDocuments();
  } catch (error) {
    fail(error);
  } finally {
    $("upload").disabled = false;
  }
}

async function deleteDocument(doc) {
  if (!confirm(`Delete ${doc.source} from ${doc.collection}?`)) return;
  await api(`/documents/${encodeURIComponent(doc.id)}`, { method: "DELETE" });
  say(`Deleted ${doc.source}.`);
  await loadDocuments();
}

function memoryText(memory) {
  const value = memory.value || {};
  return typeof value.text === "string" ? value.text : JSON.stringify(value);
}

async function loadMemories() {
  const list = $("memories");
  if (!state.userId) {
    list.replaceChildren();
    return;
  }
  const page = await api(`/users/${encodeURIComponent(state.userId)}/memories?limit=50`);
  if (!page.items.length) {
    list.replaceChildren(el("li", { className: "muted" }, "Nothing remembered yet."));
    return;
  }
  list.replaceChildren(
    ...page.items.map((memory) =>
      el(
        "li",
        {},
        el("span", { className: "grow" }, memoryText(memory)),
        el(
          "button",
          {
            type: "button",
            className: "link danger",
            "aria-label": `Forget: ${memoryText(memory)}`,
            onclick: () => forget(memory).catch(fail),
          },
          "Forget",
        ),
      ),
    ),
  );
}

async function forget(memory) {
  const user = encodeURIComponent(state.userId);
  await api(`/users/${user}/memories/${encodeURIComponent(memory.key)}`, { method: "DELETE" });
  say(`Forgot: ${memoryText(memory)}`);
  await loadMemories();
}

async function refreshSide() {
  await Promise.all([loadConversations(), loadMemories(), loadDocuments()]);
}

// -- wiring --------------------------------------------------------------------------------

function wire() {
  $("composer").addEventListener("submit", send);
  $("message").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => stop().catch(fail));
  $("new-chat").addEventListener("click", newConversation);
  $("new-user").addEventListener("click", askForUser);
  $("user-form").addEventListener("submit", createUser);
  $("cancel-user").addEventListener("click", () => $("user-dialog").close());
  $("agent").addEventListener("change", (event) => {
    state.agentId = event.target.value;
    localStorage.setItem(AGENT_STORAGE, state.agentId);
    describeAgent();
    newConversation();
  });
  $("user").addEventListener("change", (event) => {
    state.userId = event.target.value;
    localStorage.setItem(USER_STORAGE, state.userId);
    newConversation();
    loadMemories().catch(fail);
  });
  $("upload-form").addEventListener("submit", upload);
  $("collection").addEventListener("change", () => loadDocuments().catch(fail));
  $("refresh-memories").addEventListener("click", () => loadMemories().catch(fail));
  $("api-key").value = localStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    say(key ? "API key saved in this browser." : "API key removed.");
    start().catch(fail);
  });
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
    say("API key removed.");
  });
}

async function start() {
  await Promise.all([loadAgents(), loadUsers()]);
  const match = /^#conversation=([0-9a-f-]{36})$/.exec(location.hash);
  if (match) {
    try {
      await openConversation(match[1]);
    } catch (error) {
      fail(error);
      newConversation();
    }
  }
  await refreshSide();
  if (!state.userId) askForUser();
  document.body.dataset.ready = "true";
}

wire();
start().catch(fail);
