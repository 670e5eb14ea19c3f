// A broad sweep of the official JS client, `@langchain/langgraph-sdk`, over what a real JS app
// calls: assistants, threads, runs (every stream mode, subgraphs, interrupts and resumes,
// multitask strategies, joins and rejoins), the store and crons. Run against a server serving
// tests/projects/parity (Switchboard and `langgraph dev`); the pytest side
// (tests/integration/test_agent_api_js_sweep.py) compares the two servers' reports.
//
//   node sdk_sweep.mjs <api url>
//
// Prints one JSON line per step: {"step": name, "value": <what a client sees, normalised>}.
// Normalised: ids (uuids, also inside strings) become "<id>", timestamps "<ts>", object keys
// are sorted; everything else (status codes, keys, values, event names and their order) is
// kept as the client saw it.
import { Client } from "@langchain/langgraph-sdk";

const [apiUrl] = process.argv.slice(2);
if (!apiUrl) throw new Error("usage: node sdk_sweep.mjs <api url>");
const client = new Client({ apiUrl, callerOptions: { maxRetries: 0 } });
const tag = `sweep-${Date.now()}-${Math.random().toString(16).slice(2)}`;
const started = Date.now();
const NIL = "00000000-0000-0000-0000-000000000007";
const UUID = /[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}/gi;
const HEX = /\b[0-9a-f]{32}\b/g; // interrupt ids
const URL_ = /https?:\/\/(127\.0\.0\.1|localhost):\d+/g;
const TS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:?\d\d)?$/;

function norm(value) {
  if (typeof value === "string") {
    if (TS.test(value)) return "<ts>";
    return value.replaceAll(tag, "<tag>").replace(UUID, "<id>").replace(HEX, "<hex>").replace(URL_, "<url>");
  }
  if (Array.isArray(value)) return value.map(norm);
  if (value && typeof value === "object") {
    const out = {};
    for (const key of Object.keys(value).sort()) out[key.replace(UUID, "<id>")] = norm(value[key]);
    return out;
  }
  return value ?? null;
}

// Report a step's value; a call given as a function is made here, and its HTTP error is the
// step's value ({"error": status}) instead of ending the sweep.
async function report(step, value) {
  if (typeof value === "function") {
    try {
      value = await value();
    } catch (error) {
      if (typeof error?.status !== "number") throw error;
      value = { error: error.status };
    }
  }
  const ms = Date.now() - started;
  process.stdout.write(`${JSON.stringify({ step, value: norm(value), ms })}\n`);
}

// The status a call ends with: 200 when it succeeds, else its HTTP error's.
async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (error) {
    if (typeof error?.status === "number") return error.status;
    throw error;
  }
}

async function collect(generator) {
  const parts = [];
  for await (const part of generator) parts.push(part);
  return parts;
}

// The keys of a message's metadata that both servers set (langgraph dev adds its own
// `langgraph_api_url`, `langgraph_host` ...: docs/agent_api.md, "Metadata").
const LANGGRAPH_KEYS = ["langgraph_node", "langgraph_step", "langgraph_path", "langgraph_triggers", "langgraph_checkpoint_ns"];
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- assistants ----
{
  const created = await client.assistants.create({
    graphId: "counter",
    name: "sweep",
    description: "a sweep assistant",
    metadata: { tag, kind: "a" },
    config: { configurable: { x: 1 } },
  });
  await report("assistants.create", created);
  const aid = created.assistant_id;
  await report("assistants.get", async () => await client.assistants.get(aid));
  const updated = await client.assistants.update(aid, {
    name: "sweep2",
    metadata: { tag, kind: "b" },
  });
  await report("assistants.update", updated);
  await report("assistants.getVersions", async () => await client.assistants.getVersions(aid));
  await report(
    "assistants.getVersions.metadata",
    async () => await client.assistants.getVersions(aid, { metadata: { kind: "a" }, limit: 5 }),
  );
  await report("assistants.setLatest", async () => await client.assistants.setLatest(aid, 1));
  await report("assistants.get.after.setLatest", async () => await client.assistants.get(aid));
  await client.assistants.create({ graphId: "asker", name: "sweep-asker", metadata: { tag } });
  await report(
    "assistants.search.metadata",
    async () => (await client.assistants.search({ metadata: { tag }, sortBy: "name", sortOrder: "asc" })).map(
      (a) => [a.name, a.graph_id],
    ),
  );
  await report(
    "assistants.search.graph",
    async () => (await client.assistants.search({ graphId: "asker", metadata: { tag } })).map((a) => a.name),
  );
  await report(
    "assistants.search.select",
    async () => await client.assistants.search({ metadata: { tag }, select: ["assistant_id", "name"], limit: 1 }),
  );
  await report(
    "assistants.search.name",
    async () => (await client.assistants.search({ name: "sweep-ask", metadata: { tag } })).map((a) => a.name),
  );
  await report("assistants.count", async () => await client.assistants.count({ metadata: { tag } }));
  await report("assistants.count.graph", async () => await client.assistants.count({ graphId: "asker", metadata: { tag } }));
  await report("assistants.getGraph", async () => await client.assistants.getGraph(aid));
  await report("assistants.getGraph.xray", async () => await client.assistants.getGraph(aid, { xray: 1 }));
  await report("assistants.getSchemas", async () => await client.assistants.getSchemas(aid));
  await report("assistants.getSubgraphs", async () => await client.assistants.getSubgraphs(aid));
  await report("assistants.getSubgraphs.recurse", async () => await client.assistants.getSubgraphs(aid, { recurse: true }));
  await report("assistants.getSubgraphs.namespace", async () => await client.assistants.getSubgraphs(aid, { namespace: "child" }));
  await report("assistants.system", async () => (await client.assistants.search({ graphId: "counter", metadata: { created_by: "system" } })).map((a) => [a.name, a.metadata]));
  await report("assistants.delete", async () => await client.assistants.delete(aid));
  await report("assistants.get.deleted", async () => await status(client.assistants.get(aid)));
}

// ---- threads ----
let stateThread;
{
  const thread = await client.threads.create({ metadata: { tag, n: 1 } });
  await report("threads.create", thread);
  const tid = thread.thread_id;
  await report("threads.create.ifExists.doNothing", async () => await client.threads.create({ threadId: tid, ifExists: "do_nothing", metadata: { other: 1 } }));
  await report("threads.create.ifExists.raise", async () => await status(client.threads.create({ threadId: tid, ifExists: "raise" })));
  await report("threads.get", async () => await client.threads.get(tid));
  await report("threads.update", async () => await client.threads.update(tid, { metadata: { n: 2, extra: "y" } }));
  const second = await client.threads.create({ metadata: { tag, n: 3 } });
  await client.runs.wait(second.thread_id, "counter", { input: { count: 0 } });
  await report("threads.search.metadata", async () => (await client.threads.search({ metadata: { tag }, sortBy: "created_at", sortOrder: "asc" })).map((t) => [t.metadata.n, t.status]));
  await report("threads.search.status", async () => (await client.threads.search({ metadata: { tag }, status: "idle" })).length);
  await report("threads.search.select", async () => await client.threads.search({ metadata: { tag }, select: ["thread_id", "metadata"], sortBy: "created_at", sortOrder: "desc", limit: 1 }));
  await report("threads.search.values", async () => (await client.threads.search({ values: { count: 111 }, metadata: { tag } })).map((t) => t.values));
  await report("threads.search.ids", async () => (await client.threads.search({ ids: [tid] })).length);
  await report("threads.search.full", async () => (await client.threads.search({ ids: [second.thread_id] }))[0]);
  await report("threads.count", async () => await client.threads.count({ metadata: { tag } }));
  await report("threads.count.status", async () => await client.threads.count({ metadata: { tag }, status: "busy" }));
  await report("threads.count.values", async () => await client.threads.count({ metadata: { tag }, values: { count: 111 } }));
  const copy = await client.threads.copy(second.thread_id);
  await report("threads.copy", copy);
  await report("threads.copy.state", async () => await client.threads.getState(copy.thread_id));
  const state = await client.threads.getState(second.thread_id);
  await report("threads.getState", state);
  await report("threads.getState.subgraphs", async () => await client.threads.getState(second.thread_id, undefined, { subgraphs: true }));
  const history = await client.threads.getHistory(second.thread_id);
  await report("threads.getHistory", history);
  await report("threads.getHistory.limit", async () => (await client.threads.getHistory(second.thread_id, { limit: 2 })).map((s) => s.next));
  await report("threads.getHistory.metadata", async () => (await client.threads.getHistory(second.thread_id, { metadata: { source: "loop" } })).map((s) => s.metadata.step));
  await report("threads.getHistory.before", async () => (await client.threads.getHistory(second.thread_id, { before: { configurable: { checkpoint_id: history[1].checkpoint.checkpoint_id } }, limit: 2 })).map((s) => s.metadata.step));
  const older = history[2];
  await report("threads.getState.checkpoint", async () => await client.threads.getState(second.thread_id, older.checkpoint));
  await report("threads.getState.checkpointId", async () => await client.threads.getState(second.thread_id, older.checkpoint.checkpoint_id));
  await report("threads.updateState", async () => await client.threads.updateState(second.thread_id, { values: { count: 5 }, asNode: "finish" }));
  await report("threads.updateState.checkpoint", async () => await client.threads.updateState(second.thread_id, { values: { count: 7 }, checkpoint: older.checkpoint, asNode: "start" }));
  const forked = await client.threads.getState(second.thread_id);
  await report("threads.getState.after.fork", [forked.values, forked.next, forked.parent_checkpoint?.checkpoint_id === older.checkpoint.checkpoint_id]);
  await report("threads.patchState", async () => await client.threads.patchState(second.thread_id, { patched: true }));
  await report("threads.getState.after.patch", async () => {
    const { source, step, patched } = (await client.threads.getState(second.thread_id)).metadata;
    return { source, step, patched };
  });
  await report("threads.delete", async () => await client.threads.delete(tid));
  await report("threads.get.deleted", async () => await status(client.threads.get(tid)));
  await report("threads.getState.unknown", async () => await status(client.threads.getState(NIL)));
  stateThread = second.thread_id;
}

// ---- runs ----
{
  const thread = await client.threads.create();
  const tid = thread.thread_id;
  const run = await client.runs.create(tid, "counter", { input: { count: 0 }, metadata: { tag } });
  await report("runs.create", run);
  await report("runs.join", async () => await client.runs.join(tid, run.run_id));
  await report("runs.get", async () => await client.runs.get(tid, run.run_id));
  await report("runs.list", async () => await client.runs.list(tid));
  await report("runs.list.status", async () => (await client.runs.list(tid, { status: "success", limit: 1 })).length);
  await report("runs.wait", async () => await client.runs.wait(tid, "counter", { input: { count: 1 } }));
  await report("runs.wait.stateless", async () => await client.runs.wait(null, "counter", { input: { count: 2 } }));
  await report("runs.create.stateless", async () => await client.runs.create(null, "counter", { input: { count: 2 } }));

  const modes = ["values", "updates", "custom", "debug", "events", "messages-tuple", "tasks", "checkpoints"];
  for (const mode of modes) {
    const t = await client.threads.create();
    const parts = await collect(client.runs.stream(t.thread_id, "counter", { input: { count: 0 }, streamMode: mode }));
    await report(`runs.stream.${mode}`, parts.map((p) => shape(mode, p)));
  }
  {
    const t = await client.threads.create();
    const parts = await collect(
      client.runs.stream(t.thread_id, "counter", {
        input: { count: 0 },
        streamMode: ["values", "updates", "messages-tuple", "custom", "debug"],
        streamSubgraphs: true,
      }),
    );
    await report("runs.stream.array.subgraphs", parts.map((p) => [p.event, p.event.startsWith("debug") ? p.data.type : p.event.startsWith("values") || p.event.startsWith("updates") || p.event.startsWith("custom") ? p.data : null]));
  }
  {
    const t = await client.threads.create();
    const parts = await collect(
      client.runs.stream(t.thread_id, "talker", {
        input: { messages: [{ role: "user", content: "hi" }] },
        streamMode: ["messages-tuple", "values"],
      }),
    );
    await report("runs.stream.talker", parts.map((p) => (p.event === "messages" ? [p.event, p.data[0].content, p.data[0].type, Object.keys(p.data[1]).filter((k) => LANGGRAPH_KEYS.includes(k)).sort()] : [p.event, p.event === "values" ? p.data.messages.map((m) => [m.type, m.content]) : null])));
    const messages = await collect(
      client.runs.stream(t.thread_id, "talker", {
        input: { messages: [{ role: "user", content: "again" }] },
        streamMode: "messages",
      }),
    );
    await report("runs.stream.talker.messages", messages.map((p) => p.event));
  }
  {
    const parts = await collect(client.runs.stream(null, "counter", { input: { count: 0 }, streamMode: ["values"] }));
    await report("runs.stream.stateless", parts.map((p) => [p.event, p.event === "values" ? p.data : null]));
  }
  {
    // What useStream learns of a run from the Content-Location of its answer (onRunCreated)
    const t = await client.threads.create();
    const seen = [];
    const note = (kind) => (meta) => seen.push([kind, meta]);
    await collect(client.runs.stream(t.thread_id, "counter", { input: { count: 0 }, onRunCreated: note("stream") }));
    const made = await client.runs.create(t.thread_id, "counter", { input: { count: 0 }, onRunCreated: note("create") });
    await client.runs.join(t.thread_id, made.run_id);
    await client.runs.wait(t.thread_id, "counter", { input: { count: 0 }, onRunCreated: note("wait") });
    await collect(client.runs.stream(null, "counter", { input: { count: 0 }, onRunCreated: note("stateless stream") }));
    await client.runs.wait(null, "counter", { input: { count: 0 }, onRunCreated: note("stateless wait") });
    await report("runs.onRunCreated", seen);
  }
  {
    // interrupt, then resume with a command
    const t = await client.threads.create();
    const first = await collect(client.runs.stream(t.thread_id, "asker", { input: { count: 1 }, streamMode: ["values", "updates"] }));
    await report("runs.interrupt.stream", first.map((p) => [p.event, p.data]));
    const interrupted = await client.threads.get(t.thread_id);
    await report("runs.interrupt.thread", [interrupted.status, interrupted.interrupts]);
    const state = await client.threads.getState(t.thread_id);
    await report("runs.interrupt.state", [state.next, state.tasks]);
    const resumed = await collect(client.runs.stream(t.thread_id, "asker", { command: { resume: 5 }, streamMode: "updates" }));
    await report("runs.resume.stream", resumed.map((p) => [p.event, p.data]));
    await report("runs.resume.state", async () => (await client.threads.getState(t.thread_id)).values);
    const again = await client.runs.wait(t.thread_id, "asker", { input: { count: 1 } });
    await report("runs.interrupt.wait", again);
    await report("runs.resume.wait", async () => await client.runs.wait(t.thread_id, "asker", { command: { resume: 2 } }));
    await report("runs.command.goto", async () => await status(client.runs.wait(t.thread_id, "asker", { command: { update: { count: 50 }, goto: "finish_nope" } })));
    await report("runs.interruptBefore", async () => await client.runs.wait(t.thread_id, "counter", { input: { count: 0 }, interruptBefore: ["finish"] }));
    await report("runs.interruptBefore.state", async () => (await client.threads.getState(t.thread_id)).next);
  }
  {
    // join a stream: a run's, and a thread's with lastEventId
    const t = await client.threads.create();
    const run = await client.runs.create(t.thread_id, "counter", { input: { count: 0 }, streamMode: ["values", "updates"], streamResumable: true });
    const joined = await collect(client.runs.joinStream(t.thread_id, run.run_id));
    await report("runs.joinStream", joined.map((p) => [p.event, p.data]));
    const withIds = await collect(client.runs.joinStream(t.thread_id, run.run_id, { lastEventId: "-1" }));
    await report("runs.joinStream.replay", withIds.map((p) => [p.event, typeof p.id]));
    const midway = withIds.find((p) => p.event === "updates")?.id;
    const after = await collect(client.runs.joinStream(t.thread_id, run.run_id, { lastEventId: midway }));
    await report("runs.joinStream.lastEventId", after.map((p) => p.event));
    await report("runs.joinStream.streamMode", async () => (await collect(client.runs.joinStream(t.thread_id, run.run_id, { lastEventId: "-1", streamMode: "values" }))).map((p) => p.event));
    await report("runs.joinStream.unknown", async () => await status(collect(client.runs.joinStream(t.thread_id, NIL))));
  }
  {
    const t = await client.threads.create();
    const events = [];
    const first = new AbortController();
    const reader = (async () => {
      for await (const part of client.threads.joinStream(t.thread_id, { streamMode: ["run_modes", "lifecycle", "state_update"], signal: first.signal })) {
        events.push(part);
        if (events.filter((p) => p.event === "values").length >= 4) break;
      }
    })();
    await sleep(300);
    await client.runs.wait(t.thread_id, "counter", { input: { count: 0 }, streamMode: ["values", "updates", "custom"] });
    await Promise.race([reader.catch(() => {}), sleep(1500)]);
    first.abort();
    await report("threads.joinStream", events.map((p) => [p.event, p.data]));
    const withId = events.filter((p) => p.id != null);
    await report("threads.joinStream.ids", [events.length > 0 && withId.length === events.length]);
    if (withId.length > 2) {
      const rest = [];
      const controller = new AbortController();
      const again = (async () => {
        for await (const part of client.threads.joinStream(t.thread_id, { lastEventId: withId[1].id, streamMode: ["run_modes", "lifecycle", "state_update"], signal: controller.signal })) {
          rest.push(part);
          if (rest.length >= withId.length - 2) break;
        }
      })().catch(() => {});
      await Promise.race([again, sleep(1500)]);
      controller.abort();
      await report("threads.joinStream.lastEventId", rest.map((p) => p.event));
    }
  }
  {
    // cancel, multitask strategies, onDisconnect
    const t = await client.threads.create();
    const tid = t.thread_id;
    const first = await client.runs.create(tid, "sleeper", { input: { count: 20 } });
    await sleep(400);
    await report("runs.multitask.reject", async () => await status(client.runs.create(tid, "counter", { input: {}, multitaskStrategy: "reject" })));
    const queued = await client.runs.create(tid, "counter", { input: { count: 1 }, multitaskStrategy: "enqueue" });
    await report("runs.multitask.enqueue", queued.status);
    await report("runs.thread.busy", async () => (await client.threads.get(tid)).status);
    await report("runs.cancel", async () => await client.runs.cancel(tid, first.run_id, true));
    await report("runs.cancel.status", async () => (await client.runs.get(tid, first.run_id)).status);
    await client.runs.join(tid, queued.run_id);
    const second = await client.runs.create(tid, "sleeper", { input: { count: 20 } });
    await sleep(400);
    const interrupter = await client.runs.wait(tid, "counter", { input: { count: 1 }, multitaskStrategy: "interrupt" });
    await report("runs.multitask.interrupt", [interrupter, (await client.runs.get(tid, second.run_id)).status]);
    const third = await client.runs.create(tid, "sleeper", { input: { count: 20 } });
    await sleep(400);
    await report("runs.cancel.rollback", async () => await client.runs.cancel(tid, third.run_id, true, "rollback"));
    await report("runs.cancel.rollback.get", async () => await status(client.runs.get(tid, third.run_id)));
    const controller = new AbortController();
    const gone = collect(client.runs.stream(tid, "sleeper", { input: { count: 20 }, onDisconnect: "cancel", signal: controller.signal })).catch((e) => e.name);
    await sleep(600);
    controller.abort();
    await gone;
    await sleep(800);
    const runs = await client.runs.list(tid, { limit: 1 });
    await report("runs.onDisconnect.cancel", runs[0].status);
    await report("runs.delete", async () => await client.runs.delete(tid, runs[0].run_id));
    await report("runs.get.deleted", async () => await status(client.runs.get(tid, runs[0].run_id)));
    await report("runs.cancel.unknown", async () => await status(client.runs.cancel(tid, NIL)));
    const batch = await client.runs.createBatch([
      { assistantId: "counter", input: { count: 1 } },
      { assistantId: "counter", input: { count: 2 } },
    ]);
    await report("runs.createBatch", batch);
    const slow = await client.runs.create(tid, "sleeper", { input: { count: 20 } });
    await sleep(300);
    await report("runs.cancelMany", async () => await client.runs.cancelMany({ threadId: tid, runIds: [slow.run_id] }));
    await sleep(300);
    await report("runs.cancelMany.status", async () => (await client.runs.get(tid, slow.run_id)).status);
  }
}

// ---- store ----
{
  const ns = ["sweep", tag];
  await report("store.putItem", async () => await client.store.putItem(ns, "a", { text: "red apples", n: 1 }));
  await client.store.putItem([...ns, "sub"], "b", { text: "green pears", n: 2 });
  await client.store.putItem(ns, "c", { text: "blue sky", n: 3 }, { index: false });
  await report("store.getItem", async () => await client.store.getItem(ns, "a"));
  await report("store.getItem.missing", async () => await client.store.getItem(ns, "zzz"));
  await report("store.searchItems", async () => (await client.store.searchItems(ns)).items.map((i) => [i.namespace, i.key, i.value]).sort());
  await report("store.searchItems.filter", async () => (await client.store.searchItems(ns, { filter: { n: 2 } })).items.map((i) => i.key));
  await report("store.searchItems.limit", async () => (await client.store.searchItems(ns, { limit: 1, offset: 1 })).items.length);
  const found = await client.store.searchItems(ns, { query: "red apples", limit: 1 });
  await report("store.searchItems.query", found.items.map((i) => [i.key, typeof i.score]));
  await report("store.searchItems.item", found.items[0]);
  await report("store.listNamespaces", async () => await client.store.listNamespaces({ prefix: ["sweep", tag] }));
  await report("store.listNamespaces.maxDepth", async () => await client.store.listNamespaces({ prefix: ["sweep", tag], maxDepth: 2 }));
  await report("store.listNamespaces.suffix", async () => await client.store.listNamespaces({ prefix: ["sweep"], suffix: ["sub"] }));
  await report("store.deleteItem", async () => await client.store.deleteItem(ns, "a"));
  await report("store.getItem.deleted", async () => await client.store.getItem(ns, "a"));
}

// ---- crons ----
{
  const t = await client.threads.create();
  const forThread = await client.crons.createForThread(t.thread_id, "counter", { schedule: "0 0 1 1 *", input: { count: 1 }, metadata: { tag } });
  await report("crons.createForThread", forThread);
  const stateless = await client.crons.create("counter", { schedule: "0 0 1 1 *", input: { count: 2 }, metadata: { tag } });
  await report("crons.create", stateless);
  await report("crons.search", async () => (await client.crons.search({ assistantId: "counter", threadId: t.thread_id })).map((c) => Object.keys(c).sort()));
  await report("crons.search.select", async () => await client.crons.search({ threadId: t.thread_id, select: ["cron_id", "schedule"] }));
  await report("crons.search.sort", async () => (await client.crons.search({ assistantId: "counter", sortBy: "created_at", sortOrder: "desc", limit: 2 })).length);
  await report("crons.count", async () => await client.crons.count({ threadId: t.thread_id }));
  await report("crons.update", async () => await client.crons.update(stateless.cron_id, { schedule: "0 0 2 1 *" }).then((c) => c.schedule, (e) => e.status));
  await report("crons.delete", async () => await client.crons.delete(forThread.cron_id));
  await report("crons.delete.again", async () => await status(client.crons.delete(forThread.cron_id)));
  await client.crons.delete(stateless.cron_id);
  await report("crons.create.badSchedule", async () => await status(client.crons.create("counter", { schedule: "nope" })));
}

{
  await report("threads.prune", async () => await client.threads.prune([stateThread], { strategy: "keep_latest" }).then((r) => r, (e) => e.status));
}
await report("done", true);
process.exit(0); // no stream left open keeps the process waiting

// What a part of a stream shows in one mode: the event and what the client reads of its data.
function shape(mode, part) {
  const { event, data } = part;
  if (event === "metadata" || event === "end") return [event, data == null ? null : Object.keys(data).sort()];
  if (mode === "debug") return [event, data.type, Object.keys(data.payload).sort()];
  if (mode === "events") return [event, data.event, data.name, Object.keys(data).sort()];
  if (mode === "messages-tuple") return [event, data];
  if (mode === "tasks") return [event, Object.keys(data).sort()];
  if (mode === "checkpoints") return [event, Object.keys(data).sort(), data.next];
  return [event, data];
}
