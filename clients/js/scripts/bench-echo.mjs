#!/usr/bin/env node
// Round trips of the TypeScript client against a running stack: sequential echo latency
// (p50/p99) and the throughput of concurrent echoes on one connection.
//   node --experimental-websocket clients/js/scripts/bench-echo.mjs ws://127.0.0.1:8080/ws "$(streamer token --user b --tenant b)" [n]
import { connect } from "../dist/index.js";

const [url, token, count = "500"] = process.argv.slice(2);
if (!url || !token) {
  console.error("usage: bench-echo.mjs WS_URL TOKEN [N]");
  process.exit(2);
}
const n = Number(count);
const client = await connect(url, { token });
for (let i = 0; i < 20; i++) await client.request("echo", { message: "warm" });
const times = [];
for (let i = 0; i < n; i++) {
  const t0 = performance.now();
  await client.request("echo", { message: `m${i}` });
  times.push(performance.now() - t0);
}
times.sort((a, b) => a - b);
const pct = (p) => times[Math.min(times.length - 1, Math.floor((p / 100) * times.length))].toFixed(2);
console.log(`sequential echo: n=${n} p50=${pct(50)} ms p99=${pct(99)} ms`);
// 30 in flight: the gateway allows 32 per connection (RATE_LIMITED beyond).
let next = 0;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: 30 }, async () => {
    while (next < n) await client.request("echo", { message: `c${next++}` });
  }),
);
const seconds = (performance.now() - t0) / 1000;
console.log(`concurrent echo (30 in flight): ${n} in ${seconds.toFixed(2)} s = ${(n / seconds).toFixed(0)} req/s on one connection`);
client.close();
