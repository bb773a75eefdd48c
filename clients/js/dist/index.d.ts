export { connect, isTerminal, NO_RECONNECT_CODES, reconnectHint, RequestHandle, StreamerClient, } from "./client.js";
export type { ClientOptions, ConnectionState, Progress, RequestEvent, RequestOptions, TokenProvider, WebSocketConstructor, WebSocketLike, } from "./client.js";
export * from "./errors.js";
export * from "./protocol.js";
