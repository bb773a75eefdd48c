// What the original Streamer's Node demo client (demo/client.js of the Go project: `ws`, token
// in `?Authorization=`, no subprotocol) relies on, replayed frame by frame with a bare WebSocket:
// its exact request frames, and the message fields it reads (type, percentage, message,
// result, error.message). The client itself was also run by hand against `streamer dev`
// (docs/architecture.md).
import assert from "node:assert/strict";
import { test } from "node:test";

import { URL_, token } from "./helpers.mjs";

// The payloads its commands send (tests/unit/examples/test_example_handlers.py lists them too).
const COMMANDS = [
  ["ping", {}, "sync"],
  ["echo", { message: "Hello, World!" }, "sync"],
  ["generate_report", { start_date: "2024-01-01", end_date: "2024-01-31", format: "pdf", report_type: "monthly" }, "async"],
  ["echo_async", { message: "Testing async echo", timestamp: new Date().toISOString() }, "async"],
  ["knowledge_query", { query: "What is async processing?", knowledge_base_id: "demo-kb-123", max_results: 5 }, "async"],
  ["process_data", { dataset_id: "demo-dataset-123", operation: "transform" }, "async"],
];

test("the original demo client's commands behave as it expects", async () => {
  const ws = new WebSocket(`${URL_}?Authorization=${token({ user: "alice", tenant: "acme" })}`);
  const inbox = [];
  let wake;
  ws.onmessage = (ev) => {
    inbox.push(JSON.parse(ev.data));
    wake?.();
  };
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  try {
    let n = 0;
    for (const [action, payload, kind] of COMMANDS) {
      const id = `req-${Date.now()}${n++}`;
      ws.send(JSON.stringify({ id, action, payload, metadata: { client_version: "1.0.0", demo_client: true } }));
      const mine = [];
      for (;;) {
        while (inbox.length) {
          const msg = inbox.shift();
          assert.equal(msg.request_id, id, JSON.stringify(msg));
          mine.push(msg);
        }
        const last = mine.at(-1);
        if (last && ["response", "complete", "error"].includes(last.type)) break;
        await new Promise((resolve) => {
          wake = resolve;
        });
      }
      assert.ok(!mine.some((m) => m.type === "error"), `${action}: ${JSON.stringify(mine)}`);
      if (kind === "sync") {
        assert.deepEqual(mine.map((m) => m.type), ["response"], action);
        continue;
      }
      const progress = mine.filter((m) => m.type === "progress");
      assert.equal(mine[0].type, "acknowledgment", action);
      assert.equal(mine.at(-1).type, "complete", action);
      assert.ok(mine.at(-1).result && typeof mine.at(-1).result === "object", action);
      // It draws Math.floor(percentage) as a bar and prints message; it expects a 100.
      for (const p of progress) assert.ok(typeof p.percentage === "number" && typeof p.message === "string");
      assert.equal(progress.at(-1).percentage, 100, action);
    }
  } finally {
    ws.close();
  }
});
