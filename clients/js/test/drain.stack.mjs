// A draining gateway's reconnect hint, against the real stack with two connect processes.
//
// Run by tests/e2e/test_js_client.py (test_the_js_client_honours_the_drain_hint), which starts
// the stack with two connects and passes STREAMER_URLS (the one to drain first) and
// STREAMER_DRAIN_PID. The clients all sit on the first connect, knowing both URLs; the test
// sends it SIGTERM: it drains, closing each socket with 1001 and `reconnect_after_ms=N`, N
// spread over its sockets. Each client must come back no earlier than its N, on the other
// connect, and still work.
import assert from "node:assert/strict";
import { test } from "node:test";

import { StreamerClient, reconnectHint } from "../dist/index.js";
import { token } from "./helpers.mjs";

const URLS = (process.env.STREAMER_URLS ?? "").split(",").filter(Boolean);
const PID = Number(process.env.STREAMER_DRAIN_PID ?? "0");
const CLIENTS = 20;

test("drained clients come back no earlier than their hint, on another gateway", { skip: !PID && "run by tests/e2e/test_js_client.py" }, async () => {
  assert.equal(URLS.length, 2);
  const [drained, other] = URLS;
  const seen = []; // per client: when it lost the socket and when it was open again (ms since the epoch)
  const clients = Array.from({ length: CLIENTS }, (_, i) => {
    seen.push({ lost: undefined, back: undefined });
    return new StreamerClient([drained, other], {
      token: token({ user: `drain-${i}`, tenant: "drain" }),
      heartbeatMs: 0,
      reconnectDelayMs: 50,
      onStateChange: (state) => {
        if (state === "reconnecting") seen[i].lost = Date.now();
        if (state === "open" && seen[i].lost !== undefined) seen[i].back = Date.now();
      },
    });
  });
  try {
    await Promise.all(clients.map((c) => c.connect()));
    assert.ok(clients.every((c) => c.url === drained));
    process.kill(-PID, "SIGTERM"); // its own process group, as the stack starts it
    for (let i = 0; i < 1200 && !seen.every((s) => s.back !== undefined); i++) {
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.ok(seen.every((s) => s.back !== undefined), `back: ${seen.filter((s) => s.back).length} of ${CLIENTS}`);
    const hints = clients.map((c) => reconnectHint(c.lastCloseReason));
    for (const [i, c] of clients.entries()) {
      assert.equal(c.lastCloseCode, 1001, `client ${i} closed with ${c.lastCloseCode}`);
      assert.equal(typeof hints[i], "number", `client ${i}: no hint in ${JSON.stringify(c.lastCloseReason)}`);
      // Timers may fire a millisecond early against Date.now(): allow that much, no more.
      const waited = seen[i].back - seen[i].lost;
      assert.ok(waited >= hints[i] - 2, `client ${i} came back after ${waited} ms, hinted ${hints[i]} ms`);
      assert.equal(c.url, other, `client ${i} came back on the drained gateway`);
      assert.equal(c.reconnects, 1);
    }
    assert.ok(new Set(hints).size > 1, `every client got the same moment: ${hints[0]} ms`);
    const late = seen.map((s, i) => s.back - s.lost - hints[i]);
    console.log(
      `hints ${Math.min(...hints)}-${Math.max(...hints)} ms; back ${Math.min(...late)}-${Math.max(...late)} ms after the hint`,
    );
    // Still working on the other gateway.
    const answers = await Promise.all(clients.map((c, i) => c.request("echo", { message: `m${i}` })));
    assert.deepEqual(
      answers.map((a) => a.message),
      clients.map((_, i) => `m${i}`),
    );
  } finally {
    for (const c of clients) c.close();
  }
});
