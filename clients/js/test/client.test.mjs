// The TypeScript client (its built ES module, dist/) against the real local stack.
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { after, before, describe, test } from "node:test";

import {
  ConnectionClosedError,
  InvalidActionError,
  NotFoundError,
  PayloadTooLargeError,
  RequestCancelledError,
  RequestTimeoutError,
  StreamerClient,
  StreamerError,
  UnauthorizedError,
  ValidationError,
  connect,
} from "../dist/index.js";
import { REPORT, URL_, token, uid } from "./helpers.mjs";

describe("requests", () => {
  let client;
  before(async () => {
    client = await connect(URL_, { token: token() });
  });
  after(() => client.close());

  test("a sync echo resolves with the response's data", async () => {
    const result = await client.request("echo", { message: "hello from node" });
    assert.equal(result.message, "hello from node");
    assert.deepEqual(result.echo, { message: "hello from node" });
    assert.equal(client.state, "open");
  });

  test("a request over the gateway's hard frame limit fails alone, unsent", async () => {
    // Sent, the gateway would close the socket (1009, no reconnect) under every other request.
    const running = client.request("delay", { seconds: 1, steps: 2 });
    await assert.rejects(client.request("echo", { message: "x".repeat(600_000) }), (err) => {
      assert.ok(err instanceof PayloadTooLargeError);
      assert.equal(err.details.limit, 512 * 1024);
      return true;
    });
    assert.equal((await running).steps, 2);
    assert.equal(client.state, "open");
  });

  test("an async report reports progress up to 100 and resolves with the result", async () => {
    const seen = [];
    const result = await client.request("generate_report", REPORT, { onProgress: (p) => seen.push(p) });
    assert.ok(seen.length >= 2, `progress reports: ${seen.length}`);
    assert.equal(seen.at(-1).percentage, 100);
    for (let i = 1; i < seen.length; i++) assert.ok(seen[i].seq > seen[i - 1].seq, "seq only increases");
    assert.equal(typeof result, "object");
    assert.ok(result !== null);
  });

  test("the events of a request: acknowledgment, progress..., complete, then the iterator ends", async () => {
    const handle = client.start("echo_async", { message: "hi" });
    const types = [];
    for await (const msg of handle.events()) types.push(msg.type);
    assert.equal(types[0], "acknowledgment");
    assert.equal(types.at(-1), "complete");
    assert.ok(types.includes("progress"));
    assert.equal(handle.status, "COMPLETED");
    assert.equal(handle.percentage, 100);
    // Iterating late replays the whole history.
    const again = [];
    for await (const msg of client.events(handle.requestId)) again.push(msg.type);
    assert.deepEqual(again, types);
  });

  test("a validation error rejects with ValidationError and its details", async () => {
    await assert.rejects(client.request("generate_report", { start_date: "2026-02-30" }), (err) => {
      assert.ok(err instanceof ValidationError);
      assert.ok(err instanceof StreamerError);
      assert.equal(err.code, "VALIDATION_ERROR");
      assert.equal(err.retryable, false);
      assert.ok(Array.isArray(err.details) && err.details.length > 0);
      assert.ok(err.requestId);
      return true;
    });
  });

  test("an unknown action rejects with InvalidActionError", async () => {
    await assert.rejects(client.request("no_such_action", {}), InvalidActionError);
  });

  test("an AbortSignal cancels the request on the server", async () => {
    const controller = new AbortController();
    const id = uid("abort");
    let started;
    const reachedProgress = new Promise((resolve) => {
      started = resolve;
    });
    const pending = client.request("delay", { seconds: 30, steps: 30 }, {
      id,
      signal: controller.signal,
      onProgress: () => started(),
    });
    await reachedProgress;
    controller.abort();
    await assert.rejects(pending, (err) => err instanceof RequestCancelledError && err.requestId === id);
    // The server really stops it: its stored status becomes CANCELLED.
    let status;
    for (let i = 0; i < 100; i++) {
      status = await client.status(id);
      if (status.status === "CANCELLED") break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(status.status, "CANCELLED");
  });

  test("timeoutMs gives up on the client side only", async () => {
    const id = uid("patience");
    await assert.rejects(client.request("delay", { seconds: 1, steps: 1 }, { id, timeoutMs: 50 }), RequestTimeoutError);
    const handle = client.handle(id);
    assert.equal(await handle.result().then((r) => r.seconds), 1); // it still finished on the server
  });

  test("ping answers with a pong; status of an unknown request is NOT_FOUND", async () => {
    const pong = await client.ping();
    assert.equal(pong.type, "pong");
    await assert.rejects(client.status(uid("unknown")), NotFoundError);
  });
});

describe("tenants and subscriptions", () => {
  test("another connection of the tenant can subscribe; another tenant cannot even see it", async () => {
    const owner = await connect(URL_, { token: token({ user: "ann", tenant: "acme" }) });
    const colleague = await connect(URL_, { token: token({ user: "bob", tenant: "acme" }) });
    const stranger = await connect(URL_, { token: token({ user: "eve", tenant: "umbrella" }) });
    try {
      const id = uid("shared");
      const running = owner.request("delay", { seconds: 1.5, steps: 3 }, { id });
      await new Promise((r) => setTimeout(r, 300));
      const followed = await colleague.subscribe(id);
      await assert.rejects(stranger.status(id), NotFoundError);
      await assert.rejects(stranger.subscribe(id), NotFoundError);
      const [mine, theirs] = await Promise.all([running, followed.result()]);
      assert.deepEqual(theirs, mine);
    } finally {
      owner.close();
      colleague.close();
      stranger.close();
    }
  });
});

describe("subscriptions across reconnects", () => {
  test("a subscription is renewed after a reconnect; unsubscribe ends it", async () => {
    const owner = await connect(URL_, { token: token({ user: "ann", tenant: "sub" }) });
    const follower = await connect(URL_, { token: token({ user: "bob", tenant: "sub" }), reconnectDelayMs: 20 });
    try {
      const first = uid("followed");
      const running = owner.request("delay", { seconds: 1.5, steps: 6 }, { id: first });
      await new Promise((r) => setTimeout(r, 200));
      const handle = await follower.subscribe(first);
      follower.dropConnection();
      assert.deepEqual(await handle.result(), await running);
      assert.equal(handle.status, "COMPLETED");

      const second = uid("dropped");
      const other = owner.request("delay", { seconds: 1, steps: 2 }, { id: second });
      await new Promise((r) => setTimeout(r, 200));
      const h2 = await follower.subscribe(second);
      await follower.unsubscribe(second);
      await assert.rejects(h2.result(), RequestCancelledError);
      await other; // the request itself goes on for its owner
    } finally {
      owner.close();
      follower.close();
    }
  });
});

describe("requests of any age", () => {
  test("a request $resume no longer reports still settles after a reconnect", async () => {
    // Its own user, so that only this test's requests count against $resume's cap.
    const who = { user: uid("aged"), tenant: "aged" };
    let release;
    const gate = new Promise((resolve) => {
      release = resolve;
    });
    let opens = 0;
    const client = await connect(URL_, {
      token: async () => {
        opens += 1;
        if (opens > 1) await gate; // the reconnect waits until the request is out of $resume's reach
        return token(who);
      },
      reconnectDelayMs: 20,
      resumeGraceMs: 500,
    });
    const other = await connect(URL_, { token: token(who) });
    try {
      const id = uid("old");
      const handle = client.start("echo_async", { message: "from long ago" }, { id });
      for await (const msg of handle.events()) if (msg.type === "acknowledgment") break;
      client.dropConnection();
      for (let i = 0; i < 200 && (await other.status(id)).status !== "COMPLETED"; i++) {
        await new Promise((r) => setTimeout(r, 50));
      }
      // $resume answers at most the 100 newest finished requests: 101 newer ones crowd it out.
      let next = 0;
      await Promise.all(
        Array.from({ length: 25 }, async () => {
          while (next < 101) {
            next += 1;
            await other.request("echo_async", { message: "newer" });
          }
        }),
      );
      release();
      const result = await handle.result();
      assert.equal(result.message, "from long ago");
      const last = handle.messages.at(-1);
      assert.equal(last.type, "status"); // the $subscribe answer, not a $resume one
      assert.equal(last.resumed, undefined);
      assert.equal(client.reconnects, 1);
    } finally {
      release();
      client.close();
      other.close();
    }
  });
});

describe("connecting", () => {
  test("the token goes in Sec-WebSocket-Protocol and only streamer.v1 comes back", async () => {
    const ws = new WebSocket(URL_, ["streamer.v1", token()]);
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    assert.equal(ws.protocol, "streamer.v1");
    ws.close();
  });

  test("the token in the query string works too", async () => {
    const client = await connect(URL_, { token: token(), tokenIn: "query" });
    try {
      assert.equal((await client.request("echo", { message: "q" })).message, "q");
    } finally {
      client.close();
    }
  });

  test("a token function is called on every connect", async () => {
    let calls = 0;
    const client = await connect(URL_, {
      token: async () => {
        calls += 1;
        return token();
      },
      reconnectDelayMs: 20,
    });
    try {
      client.dropConnection();
      assert.equal((await client.request("echo", { message: "again" })).message, "again");
      assert.ok(calls >= 2, `token function called ${calls} times`);
    } finally {
      client.close();
    }
  });

  test("a bad token is refused with UnauthorizedError", async () => {
    await assert.rejects(connect(URL_, { token: token({ secret: "not-the-secret-xxxxxxxxxxxxxxxxxxxxx" }) }), UnauthorizedError);
    await assert.rejects(connect(URL_, {}), UnauthorizedError);
  });

  test("closing rejects every pending request with ConnectionClosedError", async () => {
    const client = await connect(URL_, { token: token() });
    const pending = client.request("delay", { seconds: 5, steps: 5 });
    await new Promise((r) => setTimeout(r, 100));
    client.close();
    await assert.rejects(pending, ConnectionClosedError);
    assert.equal(client.state, "closed");
    assert.throws(() => client.start("echo", { message: "x" }), ConnectionClosedError);
  });

  test("on Node 20 without --experimental-websocket the error says what to do", () => {
    const script =
      'import("./dist/index.js").then((m) => new m.StreamerClient("ws://127.0.0.1:9/ws").connect())' +
      '.then(() => console.log("connected"), (e) => console.log(e.message));';
    const globalWs = execFileSync(process.execPath, ["-e", "console.log(typeof WebSocket)"]).toString().trim();
    const out = execFileSync(process.execPath, ["-e", script], { cwd: new URL("..", import.meta.url) }).toString();
    if (globalWs === "undefined") assert.match(out, /experimental-websocket/);
    else assert.match(out, /Cannot connect/); // Node 22+: a global WebSocket, nothing listening on port 9
  });
});

describe("reconnecting", () => {
  test("a request survives a dropped connection and every pending request resolves", async () => {
    const states = [];
    const client = await connect(URL_, {
      token: token({ user: "rec", tenant: "rec" }),
      reconnectDelayMs: 50,
      onStateChange: (s) => states.push(s),
    });
    try {
      const progress = [];
      const slow = client.request("delay", { seconds: 1.5, steps: 6 }, { onProgress: (p) => progress.push(p.percentage) });
      const report = client.request("generate_report", REPORT);
      await new Promise((r) => setTimeout(r, 400));
      client.dropConnection();
      const [a, b] = await Promise.all([slow, report]);
      assert.equal(a.seconds, 1.5);
      assert.ok(b);
      assert.ok(client.reconnects >= 1);
      assert.deepEqual(states.slice(0, 3), ["open", "reconnecting", "open"]);
      assert.equal(new Set(progress).size, progress.length, "each progress report once");
      // Frames sent while reconnecting go out once the socket is back.
      client.dropConnection();
      assert.equal((await client.request("echo", { message: "after" })).message, "after");
    } finally {
      client.close();
    }
  });

  test("the heartbeat notices a silent connection and reconnects", async () => {
    const client = await connect(URL_, { token: token(), heartbeatMs: 100, reconnectDelayMs: 20 });
    try {
      // Silence the socket without closing it, as a dead network path would.
      const original = client.ws;
      original.onmessage = null;
      for (let i = 0; i < 100 && client.reconnects === 0; i++) await new Promise((r) => setTimeout(r, 50));
      assert.equal(client.reconnects, 1);
      assert.equal((await client.request("echo", { message: "alive" })).message, "alive");
    } finally {
      client.close();
    }
  });
});
