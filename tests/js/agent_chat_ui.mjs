// Agent Chat UI's flow, driven by the hook Agent Chat UI itself uses: `useStream` from
// @langchain/langgraph-sdk/react, rendered by React in Node, with the options and calls of
// langchain-ai/agent-chat-ui (src/providers/Stream.tsx, src/providers/Thread.tsx,
// src/components/thread/index.tsx, messages/human.tsx, agent-inbox/hooks/use-interrupted-actions.tsx).
//
//   node agent_chat_ui.mjs <api url> [assistant id]
//
// Every step asserts what the page would show. Prints one JSON line per step on stdout; exits
// non-zero (with the failed assertion on stderr) when the server does not behave as
// LangGraph's does. The graph is tests/projects/agent_chat/agent.py.
import assert from "node:assert/strict";
import React from "react";
import TestRenderer from "react-test-renderer";
import { Client, overrideFetchImplementation } from "@langchain/langgraph-sdk";
import { useStream } from "@langchain/langgraph-sdk/react";
import { isRemoveUIMessage, isUIMessage, uiMessageReducer } from "@langchain/langgraph-sdk/react-ui";

const [apiUrl, assistantId = "agent"] = process.argv.slice(2);
assert.ok(apiUrl, "usage: node agent_chat_ui.mjs <api url> [assistant id]");
const ignored = /react-test-renderer is deprecated/;
const consoleError = console.error;
console.error = (...args) => {
  if (!ignored.test(String(args[0]))) consoleError(...args);
};

// Every request the SDK makes, so the test can check what Agent Chat UI sends.
const requests = [];
overrideFetchImplementation(async (input, init = {}) => {
  const url = new URL(typeof input === "string" ? input : input.url);
  let body;
  if (typeof init.body === "string") {
    try {
      body = JSON.parse(init.body);
    } catch {
      body = init.body;
    }
  }
  requests.push({ method: init.method ?? "GET", path: url.pathname, search: url.search, body });
  return fetch(input, init);
});

function report(step, details) {
  process.stdout.write(`${JSON.stringify({ step, ...details })}\n`);
}

function noError(what) {
  if (stream.error != null) throw new Error(`${what}: ${stream.error.message ?? stream.error}`);
}

function text(message) {
  if (typeof message?.content === "string") return message.content;
  return (message?.content ?? []).map((part) => part.text ?? "").join("");
}

async function until(predicate, what, timeoutMs = 30_000) {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// What the page shows once a submit (or join) is over and React has rendered its end.
async function settled(promise) {
  await promise;
  await until(() => !stream.isLoading, "the page to render the end of the stream");
}

// The page: a thread id in the address (here: state), the hook, what it renders.
let stream;
const renders = []; // the last AI message's text at every render: tokens arriving
function Page() {
  const [threadId, setThreadId] = React.useState(null);
  stream = useStream({
    apiUrl,
    assistantId,
    threadId,
    fetchStateHistory: true,
    onCustomEvent: (event, options) => {
      if (isUIMessage(event) || isRemoveUIMessage(event)) {
        options.mutate((prev) => ({ ...prev, ui: uiMessageReducer(prev.ui ?? [], event) }));
      }
    },
    onThreadId: (id) => setThreadId(id),
  });
  const messages = stream.messages; // the page renders messages: tracks messages-tuple + values
  const last = messages.at(-1);
  if (last?.type === "ai") renders.push(text(last));
  return null;
}

const client = new Client({ apiUrl });
const root = TestRenderer.create(React.createElement(Page));

// 1. The thread list: threads.search by metadata graph_id (Thread.tsx, getThreads).
const before = await client.threads.search({ metadata: { graph_id: assistantId }, limit: 100 });
report("threads.search", { count: before.length });

// 2. A question (thread/index.tsx, handleSubmit): a new thread, the answer streamed.
function human(content) {
  return { id: crypto.randomUUID(), type: "human", content: [{ type: "text", text: content }] };
}
const submitOptions = { streamMode: ["values"], streamSubgraphs: true, streamResumable: true };
const hello = human("hello there");
renders.length = 0;
await settled(
  stream.submit(
    { messages: [hello] },
    {
      ...submitOptions,
      optimisticValues: (prev) => ({ ...prev, messages: [...(prev.messages ?? []), hello] }),
    },
  ),
);
noError("the run failed");
const created = requests.filter((r) => r.method === "POST" && /\/threads\/[^/]+\/runs\/stream$/.test(r.path));
assert.equal(created.length, 1, "one runs.stream request");
const runRequest = created[0].body;
assert.deepEqual([...runRequest.stream_mode].sort(), ["custom", "messages-tuple", "values"]);
assert.equal(runRequest.stream_subgraphs, true);
assert.equal(runRequest.stream_resumable, true);
assert.equal(runRequest.on_disconnect, "continue");
const thread = created[0].path.split("/")[2];
let messages = stream.messages;
assert.deepEqual(
  messages.map((m) => m.type),
  ["human", "ai"],
  `messages after the first answer: ${JSON.stringify(messages)}`,
);
const firstAnswer = text(messages[1]);
assert.match(firstAnswer, /^You said: hello there \(run [0-9a-f]{8}\)$/);
const partial = new Set(renders.filter((shown) => shown && shown !== firstAnswer));
assert.ok(partial.size >= 2, `the answer did not stream token by token: ${[...renders]}`);
for (const shown of partial) assert.ok(firstAnswer.startsWith(shown), `out of order: ${shown}`);
assert.equal(stream.values.ui?.length, 1, "the custom event's generative-UI card");
assert.equal(stream.values.ui[0].props.text, firstAnswer);
report("submit", { thread, answer: firstAnswer, partial: partial.size });

// 3. The history: every checkpoint with its parent's, one chain back to the first.
const history = stream.history;
assert.ok(history.length >= 2, "a history of checkpoints");
for (const state of history) {
  assert.equal(state.checkpoint.thread_id, thread);
  assert.equal(typeof state.checkpoint.checkpoint_id, "string");
  assert.equal(typeof state.checkpoint.checkpoint_ns, "string");
}
const known = new Set(history.map((state) => state.checkpoint.checkpoint_id));
const roots = history.filter((state) => !known.has(state.parent_checkpoint?.checkpoint_id));
assert.equal(roots.length, 1, `one chain of checkpoints from the first: ${JSON.stringify(roots)}`);
assert.equal(roots[0].parent_checkpoint, null, "the first checkpoint has no parent");
report("history", { length: history.length });

// 4. The thread list finds the new thread by its graph (threads.create sent no metadata).
const listed = await client.threads.search({ metadata: { graph_id: assistantId }, limit: 100 });
assert.ok(
  listed.some((t) => t.thread_id === thread),
  `threads.search by graph_id does not list thread ${thread}: ${JSON.stringify(listed)}`,
);
report("threads.search", { count: listed.length });

// 5. Regenerate (thread/index.tsx handleRegenerate): from the answer's parent checkpoint.
const answerMeta = stream.getMessagesMetadata(messages[1], 1);
const parentCheckpoint = answerMeta?.firstSeenState?.parent_checkpoint;
assert.ok(parentCheckpoint?.checkpoint_id, `no parent checkpoint: ${JSON.stringify(answerMeta)}`);
await settled(stream.submit(undefined, { ...submitOptions, checkpoint: parentCheckpoint }));
noError("regenerating failed");
const regenerate = requests.filter((r) => /\/runs\/stream$/.test(r.path)).at(-1).body;
assert.equal(regenerate.checkpoint.checkpoint_id, parentCheckpoint.checkpoint_id);
messages = stream.messages;
assert.deepEqual(messages.map((m) => m.type), ["human", "ai"]);
const secondAnswer = text(messages[1]);
assert.match(secondAnswer, /^You said: hello there \(run [0-9a-f]{8}\)$/);
assert.notEqual(secondAnswer, firstAnswer, "a regenerated answer comes from another run");
const branch = stream.getMessagesMetadata(messages[1], 1);
assert.equal(branch?.branchOptions?.length, 2, `two branches: ${JSON.stringify(branch)}`);
report("regenerate", { answer: secondAnswer, branches: branch.branchOptions.length });

// 6. An interrupt, then command.resume (agent-inbox, use-interrupted-actions.tsx resumeRun).
const ask = human("please approve the plan");
await settled(stream.submit({ messages: [ask] }, submitOptions));
noError("the run failed");
assert.deepEqual(stream.interrupt?.value, { question: "May I approve it?" });
const head = stream.history.at(-1); // the history as shown: oldest first
assert.deepEqual(head.next, ["approval"]);
const waiting = head.tasks.find((task) => task.interrupts.length > 0);
assert.deepEqual(waiting?.interrupts.map((i) => i.value), [{ question: "May I approve it?" }]);
const state = await client.threads.getState(thread);
assert.equal((await client.threads.get(thread)).status, "interrupted");
assert.deepEqual(state.tasks[0].interrupts.map((i) => i.value), [{ question: "May I approve it?" }]);
await settled(stream.submit({}, { command: { resume: { decisions: [{ type: "approve" }] } } }));
noError("resuming failed");
const resume = requests.filter((r) => /\/runs\/stream$/.test(r.path)).at(-1).body;
assert.deepEqual(resume.command, { resume: { decisions: [{ type: "approve" }] } });
assert.equal(stream.interrupt, undefined, "the interrupt is answered");
assert.match(text(stream.messages.at(-1)), /^Decision: .*approve/);
assert.equal((await client.threads.get(thread)).status, "idle");
report("resume", { answer: text(stream.messages.at(-1)) });

// 7. Leave a slow answer mid-stream (the run goes on: on_disconnect=continue), then join it
//    again (useStream.joinStream: Last-Event-ID -1 replays it), and join from an event id.
const slowRenders = renders.length;
const leaving = stream.submit({ messages: [human("answer slowly please")] }, submitOptions);
await until(() => renders.length > slowRenders + 2, "the first tokens of the slow answer");
await settled(stream.stop().then(() => leaving));
const runs = await client.runs.list(thread, { limit: 1 });
const runId = runs[0].run_id;
assert.equal(runs[0].status, "running", "the run goes on after the client left");
await settled(stream.joinStream(runId));
noError("joining failed");
const slowAnswer = text(stream.messages.at(-1));
assert.match(slowAnswer, /^You said: answer slowly please \(run [0-9a-f]{8}\)$/);
const replay = [];
for await (const part of client.runs.joinStream(thread, runId, { lastEventId: "-1" })) {
  replay.push(part);
}
const ids = replay.map((part) => part.id).filter((id) => id != null);
assert.ok(ids.length >= 5, `event ids to join from: ${JSON.stringify(replay.slice(0, 3))}`);
// An event in the middle whose id no other event has (langgraph dev gives events stored in
// the same millisecond one id).
const from = ids.findIndex((id, i) => i >= 2 && ids.indexOf(id) === ids.lastIndexOf(id));
const rest = [];
for await (const part of client.runs.joinStream(thread, runId, { lastEventId: ids[from] })) {
  rest.push(part);
}
const replayedAfter = replay.slice(replay.findIndex((part) => part.id === ids[from]) + 1);
assert.deepEqual(
  rest.map((part) => [part.event, part.id]),
  replayedAfter.map((part) => [part.event, part.id]),
  "joining after an event id sends exactly the events after it",
);
report("join", { run: runId, replayed: replay.length, after: rest.length });

// 8. The run's status right after its stream ends, several times in a row.
const statuses = [];
for (let i = 0; i < 5; i += 1) {
  let created_run;
  for await (const part of client.runs.stream(thread, assistantId, {
    input: { messages: [human(`number ${i}`)] },
    streamMode: ["values", "messages-tuple", "custom"],
    streamResumable: true,
    onDisconnect: "continue",
    onRunCreated: (meta) => {
      created_run = meta.run_id;
    },
  })) {
    assert.notEqual(part.event, "error", `run ${i} failed: ${JSON.stringify(part.data)}`);
  }
  const run = await client.runs.get(thread, created_run);
  statuses.push(run.status);
}
assert.deepEqual(statuses, Array(5).fill("success"), "final status right after each stream");
report("status after stream", { statuses });

root.unmount();
report("done", { requests: requests.map((r) => `${r.method} ${r.path.replace(/[0-9a-f-]{36}/g, "<id>")}`) });
