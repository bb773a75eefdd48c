// @streamer/client: the browser and Node client of Streamer's WebSocket protocol.
export { connect, isTerminal, NO_RECONNECT_CODES, reconnectHint, RequestHandle, StreamerClient, } from "./client.js";
export * from "./errors.js";
export * from "./protocol.js";
