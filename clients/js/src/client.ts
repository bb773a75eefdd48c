// The TypeScript client of Streamer's WebSocket protocol, for browsers and Node >= 20.
//
// One StreamerClient holds one WebSocket; any number of requests run on it at once. Each
// request the client follows is a RequestHandle that keeps its promise, its history and its
// listeners across reconnects: after a drop the client reconnects (exponential backoff with
// jitter), re-sends the frames the server never acknowledged (ids make that idempotent),
// sends `$resume` so the server re-attaches unfinished requests to the new socket and
// answers their current state, re-subscribes, and re-sends unanswered system calls. The same
// design as the Python client (streamer/client/client.py); docs/client-js.md.
import {
  ConnectionClosedError,
  ForbiddenError,
  InternalError,
  PayloadTooLargeError,
  ProcessingFailedError,
  RequestCancelledError,
  RequestTimeoutError,
  ServiceUnavailableError,
  StreamerError,
  UnauthorizedError,
  errorFromMessage,
} from "./errors.js";
import type {
  ClientFrame,
  ErrorMessage,
  JsonObject,
  KnownServerMessage,
  ProgressMessage,
  ServerMessage,
  StatusMessage,
} from "./protocol.js";
import { SERVER_MESSAGE_TYPES, TERMINAL_STATUSES } from "./protocol.js";

/** What a request's `events()` yields. */
export type RequestEvent = KnownServerMessage;

/** The constructor of a WebSocket: the global one (browsers, Node 22+) or e.g. the `ws` package's. */
export interface WebSocketLike {
  readonly readyState: number;
  readonly protocol: string;
  onopen: ((ev: unknown) => unknown) | null;
  onmessage: ((ev: { data: unknown }) => unknown) | null;
  onclose: ((ev: { code: number; reason: string }) => unknown) | null;
  onerror: ((ev: unknown) => unknown) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type TokenProvider = () => string | Promise<string>;
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

export interface ClientOptions {
  /** A JWT, or a function returning one (called again on every reconnect, so it may refresh). */
  token?: string | TokenProvider;
  /**
   * Where the token goes. `"subprotocol"` (default): `Sec-WebSocket-Protocol: streamer.v1, <token>`,
   * the only place a browser can put it without leaving it in URLs and logs; the server selects
   * `streamer.v1` and never echoes the token. `"query"`: `?token=<token>`, for proxies that drop it.
   */
  tokenIn?: "subprotocol" | "query";
  /** Reconnect after the connection drops (default true). */
  reconnect?: boolean;
  /** Milliseconds between `$ping` frames; a ping unanswered for 2.5 x this means the connection is dead. 0 turns it off. Default 20000. */
  heartbeatMs?: number;
  /**
   * First reconnect delay (default 250 ms); doubles per failed attempt up to `reconnectMaxDelayMs` (10000).
   * A draining gateway's hint (close code 1001, `reconnect_after_ms=N` in the reason) replaces the
   * first delay: N ms (at most `reconnectMaxDelayMs`) plus jitter of up to half this delay.
   */
  reconnectDelayMs?: number;
  reconnectMaxDelayMs?: number;
  /** Failed attempts in a row before giving up (default 30); `null` never gives up. */
  maxReconnectAttempts?: number | null;
  /** How long `status()`, `cancel()`, `subscribe()`, `ping()` wait for their answer (default 10000 ms). */
  systemTimeoutMs?: number;
  /** How long opening the socket may take (default 10000 ms). */
  connectTimeoutMs?: number;
  /** After a reconnect, how long `$resume`'s answers may take before silent requests are asked for one by one (default 3000 ms). */
  resumeGraceMs?: number;
  /**
   * The largest request frame sent, in UTF-8 bytes (default 524288, the gateway's default hard limit:
   * 4 x `STREAMER_WS_MAX_FRAME_BYTES`). A larger request is refused unsent with `PayloadTooLargeError`;
   * sent, the gateway would close the whole socket with 1009 and every other request would fail.
   * `null` turns the check off.
   */
  maxFrameBytes?: number | null;
  /** The WebSocket implementation (default `globalThis.WebSocket`; Node 20 needs `--experimental-websocket` or this). */
  WebSocket?: WebSocketConstructor;
  /** Called with every server message (including published ones), e.g. for logging. */
  onMessage?: (msg: ServerMessage) => void;
  /** Called whenever the connection state changes. */
  onStateChange?: (state: ConnectionState) => void;
}

export interface RequestOptions {
  /** Your own request id (makes the request idempotent); default `c-<uuid>`. */
  id?: string;
  metadata?: JsonObject;
  /** Called with each progress report, once each (reports replayed after a reconnect are dropped). */
  onProgress?: (progress: Progress) => void;
  /** Aborting rejects at once with RequestCancelledError and sends `$cancel` to the server. */
  signal?: AbortSignal;
  /** The client's own patience: rejects with RequestTimeoutError but does not cancel on the server. */
  timeoutMs?: number;
}

/** One progress report, as given to `onProgress`. */
export interface Progress {
  requestId: string;
  percentage: number;
  message: string;
  seq: number | undefined;
  timestamp: string | undefined;
  metadata: JsonObject | undefined;
  raw: ProgressMessage;
}

/** Close codes after which reconnecting would not help: rate-limit abuse, oversized frame, disconnected on purpose. */
/** The gateway's default hard frame limit (4 x STREAMER_WS_MAX_FRAME_BYTES): larger frames close the socket. */
export const DEFAULT_MAX_FRAME_BYTES = 4 * 128 * 1024;

export const NO_RECONNECT_CODES: ReadonlySet<number> = new Set([1008, 1009, 4001]);
/** The close code of a gateway that shuts down (drains). */
const GOING_AWAY = 1001;
const HINT = /reconnect_after_ms=(\d{1,9})/;

/**
 * Milliseconds a close reason asks the client to wait before reconnecting, if it says:
 * a draining gateway closes each socket with 1001 and `server shutting down; reconnect_after_ms=N`,
 * N spread over its sockets so they do not all come back at once.
 */
export function reconnectHint(reason: string | undefined): number | undefined {
  const match = HINT.exec(reason ?? "");
  return match ? Number(match[1]) : undefined;
}
const SUBPROTOCOL = "streamer.v1";
const FINISHED_KEPT = 256;
const MAX_RESUME_RETRIES = 8;
const KNOWN_TYPES: ReadonlySet<string> = new Set(SERVER_MESSAGE_TYPES);
const SYSTEM_FAILURES: ReadonlySet<string> = new Set(["NOT_FOUND", "FORBIDDEN", "VALIDATION_ERROR", "RATE_LIMITED"]);
const OPEN = 1;

function newId(prefix: string): string {
  const c = globalThis.crypto;
  const uuid =
    c && typeof c.randomUUID === "function"
      ? c.randomUUID().replace(/-/g, "")
      : `${Date.now().toString(16)}${Math.random().toString(16).slice(2)}`;
  return `${prefix}-${uuid}`;
}

/** Whether a server message ends its request (result, error, or a terminal status). */
export function isTerminal(msg: { type: string; status?: unknown }): boolean {
  if (msg.type === "response" || msg.type === "complete" || msg.type === "error") return true;
  return msg.type === "status" && (TERMINAL_STATUSES as readonly unknown[]).includes(msg.status);
}

function outcome(msg: KnownServerMessage): { result?: unknown; error?: StreamerError } {
  const rid = typeof msg.request_id === "string" ? msg.request_id : undefined;
  switch (msg.type) {
    case "response":
      return { result: msg.data };
    case "complete":
      return { result: msg.result };
    case "error":
      return { error: errorFromMessage(msg) };
    case "status": {
      if (msg.status === "COMPLETED") return { result: msg.result };
      if (msg.status === "CANCELLED") {
        return { error: new RequestCancelledError(msg.message || "Request cancelled", { requestId: rid }) };
      }
      const err = msg.error;
      if (err && typeof err === "object") {
        return { error: errorFromMessage({ request_id: rid, error: err as ErrorMessage["error"] }) };
      }
      return { error: new ProcessingFailedError(msg.message || "Request failed", { requestId: rid }) };
    }
    default:
      return { error: new InternalError(`not a terminal message: ${msg.type}`, { requestId: rid }) };
  }
}

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: unknown) => void;
}

/** A request the client follows: its own (`start`/`request`) or one it subscribed to. */
export class RequestHandle {
  readonly requestId: string;
  readonly action: string | undefined;
  /** The frame that started it; re-sent after a reconnect until acknowledged. Undefined for subscriptions. */
  readonly frame: ClientFrame | undefined;
  onProgress: ((progress: Progress) => void) | undefined;
  /** Every message received for this request, in order. */
  readonly messages: RequestEvent[] = [];
  acknowledged = false;
  subscribed = false;
  /** @internal When the client last received a message of this request (ms since the epoch). */
  lastSeenAt = 0;
  /** PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED, as far as the client knows. */
  status: string | undefined;
  percentage = 0;
  done = false;
  private readonly client: StreamerClient;
  private readonly seenProgress = new Set<string>();
  private readonly listeners: Array<(msg: RequestEvent | null) => void> = [];
  private readonly promise: Promise<unknown>;
  private settle!: Waiter<unknown>;

  constructor(client: StreamerClient, requestId: string, action?: string, frame?: ClientFrame) {
    this.client = client;
    this.requestId = requestId;
    this.action = action;
    this.frame = frame;
    this.promise = new Promise((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.promise.catch(() => undefined); // a request nobody awaits must not be an unhandled rejection
  }

  /** The result (sync `data` or async `result`); rejects with the request's typed error. */
  result(): Promise<unknown> {
    return this.promise;
  }

  /** Every message of this request, from the first the client saw; ends after the terminal one. */
  async *events(): AsyncGenerator<RequestEvent, void, undefined> {
    const queue: Array<RequestEvent | null> = [...this.messages];
    if (this.done) queue.push(null);
    let wake: (() => void) | undefined;
    const listener = (msg: RequestEvent | null): void => {
      queue.push(msg);
      wake?.();
    };
    if (!this.done) this.listeners.push(listener);
    try {
      for (;;) {
        if (queue.length === 0) {
          await new Promise<void>((resolve) => {
            wake = resolve;
          });
          wake = undefined;
          continue;
        }
        const item = queue.shift();
        if (item === null || item === undefined) return;
        yield item;
      }
    } finally {
      const i = this.listeners.indexOf(listener);
      if (i >= 0) this.listeners.splice(i, 1);
    }
  }

  /** `$cancel` this request. */
  cancel(): Promise<StatusMessage | ErrorMessage> {
    return this.client.cancel(this.requestId);
  }

  /** @internal */
  feed(msg: RequestEvent): void {
    if (this.done) return; // a replayed or late message after the end: the outcome is fixed
    this.lastSeenAt = Date.now();
    switch (msg.type) {
      case "progress": {
        const key = JSON.stringify([msg.seq, msg.percentage, msg.message]);
        if (this.seenProgress.has(key)) return; // replayed by $resume or a re-sent frame
        this.seenProgress.add(key);
        this.acknowledged = true;
        this.status = "PROCESSING";
        if (typeof msg.percentage === "number") this.percentage = msg.percentage;
        break;
      }
      case "acknowledgment":
        this.acknowledged = true;
        this.status = this.status ?? "PENDING";
        break;
      case "status":
        this.acknowledged = true;
        if (typeof msg.status === "string") this.status = msg.status;
        if (typeof msg.percentage === "number") this.percentage = msg.percentage;
        break;
      default:
        break;
    }
    this.messages.push(msg);
    for (const listener of [...this.listeners]) listener(msg);
    if (msg.type === "progress" && this.onProgress) {
      const progress: Progress = {
        requestId: this.requestId,
        percentage: typeof msg.percentage === "number" ? msg.percentage : 0,
        message: typeof msg.message === "string" ? msg.message : "",
        seq: typeof msg.seq === "number" ? msg.seq : undefined,
        timestamp: typeof msg.timestamp === "string" ? msg.timestamp : undefined,
        metadata: msg.metadata && typeof msg.metadata === "object" ? msg.metadata : undefined,
        raw: msg,
      };
      try {
        this.onProgress(progress);
      } catch (err) {
        console.error(`onProgress of ${this.requestId} threw`, err);
      }
    }
    if (isTerminal(msg)) {
      const { result, error } = outcome(msg);
      if (msg.type === "response" || msg.type === "complete") {
        this.status = "COMPLETED";
        this.percentage = 100;
      } else if (msg.type === "error") {
        this.status = msg.error?.code === "CANCELLED" ? "CANCELLED" : "FAILED";
      }
      this.finish(result, error);
    }
  }

  /** @internal */
  finish(result: unknown, error?: StreamerError): void {
    if (this.done) return;
    this.done = true;
    if (error) this.settle.reject(error);
    else this.settle.resolve(result);
    for (const listener of this.listeners.splice(0)) listener(null);
    this.client.finished(this);
  }
}

interface SystemCall {
  frame: ClientFrame;
  target: string | undefined;
  waiter: Waiter<KnownServerMessage>;
}

/**
 * Open a connection: `const client = await connect("wss://host/ws", { token })`. Several URLs
 * (gateways of one deployment) make each reconnect try another one than the one just lost.
 */
export async function connect(url: string | readonly string[], options: ClientOptions = {}): Promise<StreamerClient> {
  const client = new StreamerClient(url, options);
  await client.connect();
  return client;
}

export class StreamerClient {
  /** Every gateway URL given; the first is tried first. */
  readonly urls: readonly string[];
  /** How many times the connection was re-established. */
  reconnects = 0;
  /** The close code of the last socket that closed. */
  lastCloseCode: number | undefined;
  /** The close reason of the last socket that closed (a draining gateway's carries `reconnect_after_ms`). */
  lastCloseReason: string | undefined;
  /** Reconnect attempts that failed (refused upgrades, unreachable gateways). */
  reconnectFailures = 0;
  private urlValue: string;
  private readonly options: Required<
    Pick<
      ClientOptions,
      | "tokenIn"
      | "reconnect"
      | "heartbeatMs"
      | "reconnectDelayMs"
      | "reconnectMaxDelayMs"
      | "systemTimeoutMs"
      | "connectTimeoutMs"
      | "resumeGraceMs"
      | "maxFrameBytes"
    >
  > &
    ClientOptions;
  private ws: WebSocketLike | undefined;
  private stateValue: ConnectionState = "connecting";
  private closing = false;
  private closedError: StreamerError | undefined;
  private lastMessageAt = 0;
  private pingSentAt: number | undefined;
  private heartbeatTimer: ReturnType<typeof setInterval> | undefined;
  private readonly requests = new Map<string, RequestHandle>();
  private readonly finishedIds = new Map<string, RequestHandle>();
  private readonly calls = new Map<string, SystemCall>();
  /** ids of automatic `$resume` frames in flight -> [retry count, page cursor] */
  private readonly autoResumes = new Map<string, [number, string | undefined]>();
  private readonly timers = new Set<ReturnType<typeof setTimeout>>();

  constructor(url: string | readonly string[], options: ClientOptions = {}) {
    this.urls = typeof url === "string" ? [url] : [...url];
    if (this.urls.length === 0) throw new TypeError("at least one URL");
    this.urlValue = this.urls[0]!;
    this.options = {
      tokenIn: "subprotocol",
      reconnect: true,
      heartbeatMs: 20000,
      reconnectDelayMs: 250,
      reconnectMaxDelayMs: 10000,
      systemTimeoutMs: 10000,
      connectTimeoutMs: 10000,
      resumeGraceMs: 3000,
      maxFrameBytes: DEFAULT_MAX_FRAME_BYTES,
      ...options,
    };
    if (this.options.tokenIn !== "subprotocol" && this.options.tokenIn !== "query") {
      throw new TypeError("tokenIn must be 'subprotocol' or 'query'");
    }
  }

  /** The URL in use (or last tried). */
  get url(): string {
    return this.urlValue;
  }

  /** "connecting", "open", "reconnecting" or "closed". */
  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Whether the socket is open right now. */
  get connected(): boolean {
    return this.stateValue === "open" && this.ws?.readyState === OPEN;
  }

  /** Open the WebSocket; rejects with UnauthorizedError, ForbiddenError or ServiceUnavailableError. */
  async connect(): Promise<void> {
    if (this.ws) return;
    this.setState("connecting");
    try {
      this.attach(await this.open());
    } catch (err) {
      this.setState("closed");
      throw err;
    }
    this.setState("open");
    const hb = this.options.heartbeatMs;
    if (hb > 0) this.heartbeatTimer = setInterval(() => this.heartbeat(hb), hb);
  }

  /** Close the connection; pending requests reject with ConnectionClosedError. */
  close(): void {
    if (this.closing) return;
    this.closing = true;
    if (this.heartbeatTimer !== undefined) clearInterval(this.heartbeatTimer);
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
    const ws = this.ws;
    if (ws) {
      ws.onclose = ws.onmessage = ws.onerror = null;
      try {
        ws.close(1000, "client closed");
      } catch {
        // already closed
      }
    }
    this.failAll(new ConnectionClosedError("Client closed"));
    this.setState("closed");
  }

  /** Drop the socket as a network failure would (tests, demos); the client then reconnects. */
  dropConnection(): void {
    const ws = this.ws;
    if (ws) this.abandon(ws, 4999);
  }

  // ------------------------------------------------------------------ requests
  /** The handle of a request this client follows (or recently finished). */
  handle(requestId: string): RequestHandle | undefined {
    return this.requests.get(requestId) ?? this.finishedIds.get(requestId);
  }

  /** Send a request and return its handle at once (await `handle.result()` for the outcome). */
  start(action: string, payload: JsonObject = {}, options: RequestOptions = {}): RequestHandle {
    if (action.startsWith("$")) throw new TypeError("use the system methods (cancel, status, ...) for '$' actions");
    this.ensureOpen();
    const id = options.id ?? newId("c");
    if (this.requests.has(id)) throw new TypeError(`request ${id} is already in flight on this client`);
    const frame: ClientFrame = { action, id, payload };
    if (options.metadata) frame.metadata = options.metadata;
    const limit = this.options.maxFrameBytes;
    if (limit !== null) {
      const size = new TextEncoder().encode(JSON.stringify(frame)).length;
      if (size > limit) {
        throw new PayloadTooLargeError(`Frame is ${size} bytes; this client sends at most ${limit} (maxFrameBytes)`, {
          details: { size, limit },
          requestId: id,
        });
      }
    }
    const handle = new RequestHandle(this, id, action, frame);
    handle.onProgress = options.onProgress;
    this.finishedIds.delete(id);
    this.requests.set(id, handle);
    this.send(frame);
    return handle;
  }

  /**
   * Run a request: resolves with its result (a sync `response`'s `data` or an async `complete`'s
   * `result`) or rejects with the StreamerError subclass of its error code.
   */
  request(action: string, payload: JsonObject = {}, options: RequestOptions = {}): Promise<unknown> {
    const { signal, timeoutMs } = options;
    if (signal?.aborted) {
      return Promise.reject(new RequestCancelledError("Aborted before it was sent", { cause: signal.reason }));
    }
    let handle: RequestHandle;
    try {
      handle = this.start(action, payload, options);
    } catch (err) {
      return Promise.reject(err);
    }
    const racers: Array<Promise<unknown>> = [handle.result()];
    const cleanups: Array<() => void> = [];
    if (signal) {
      racers.push(
        new Promise((_, reject) => {
          const onAbort = (): void => {
            reject(
              new RequestCancelledError("Aborted by the caller", { requestId: handle.requestId, cause: signal.reason }),
            );
            if (!handle.done) this.cancel(handle.requestId).catch(() => undefined);
          };
          signal.addEventListener("abort", onAbort, { once: true });
          cleanups.push(() => signal.removeEventListener("abort", onAbort));
        }),
      );
    }
    if (timeoutMs !== undefined) {
      racers.push(
        new Promise((_, reject) => {
          const timer = setTimeout(() => {
            reject(
              new RequestTimeoutError(
                `No result within ${timeoutMs} ms (the request may still be running on the server)`,
                { requestId: handle.requestId, retryable: true },
              ),
            );
          }, timeoutMs);
          cleanups.push(() => clearTimeout(timer));
        }),
      );
    }
    return Promise.race(racers).finally(() => {
      for (const cleanup of cleanups) cleanup();
    });
  }

  /** Every message of a request, from the first the client saw; ends after the terminal one. */
  events(requestId: string): AsyncGenerator<RequestEvent, void, undefined> {
    let handle = this.handle(requestId);
    if (!handle) {
      handle = new RequestHandle(this, requestId);
      this.requests.set(requestId, handle);
    }
    return handle.events();
  }

  // ------------------------------------------------------------------ system actions
  /** `$ping`: resolves with the `pong`. */
  ping(): Promise<KnownServerMessage> {
    return this.system("$ping", undefined);
  }

  /** `$status`: the request's stored state. NotFoundError for an unknown request or one of another tenant. */
  async status(requestId: string): Promise<StatusMessage> {
    return (await this.system("$status", requestId)) as StatusMessage;
  }

  /** `$cancel`: the server's answer (a CANCELLED answer is success, not an error). */
  async cancel(requestId: string): Promise<StatusMessage | ErrorMessage> {
    const msg = await this.system("$cancel", requestId, false);
    if (msg.type === "error" && msg.error.code !== "CANCELLED") {
      throw errorFromMessage({ ...msg, request_id: requestId });
    }
    return msg as StatusMessage | ErrorMessage;
  }

  /** `$subscribe` to a request of your tenant started elsewhere; re-subscribed after a reconnect. */
  async subscribe(requestId: string): Promise<RequestHandle> {
    let handle = this.handle(requestId);
    const created = !handle;
    if (!handle) {
      handle = new RequestHandle(this, requestId);
      this.requests.set(requestId, handle);
    }
    try {
      const msg = await this.system("$subscribe", requestId);
      if (msg.request_id === requestId && !handle.messages.includes(msg)) handle.feed(msg);
    } catch (err) {
      if (created) this.requests.delete(requestId);
      throw err;
    }
    handle.subscribed = true;
    return handle;
  }

  /** `$unsubscribe`: stop receiving a request's messages; its subscription handle rejects with RequestCancelledError. */
  async unsubscribe(requestId: string): Promise<StatusMessage> {
    const msg = (await this.system("$unsubscribe", requestId)) as StatusMessage;
    const handle = this.requests.get(requestId);
    if (handle && !handle.frame) {
      handle.subscribed = false;
      handle.finish(undefined, new RequestCancelledError("Unsubscribed", { requestId }));
    }
    return msg;
  }

  /** `$resume`: re-attach this user's unfinished requests (sent automatically after a reconnect). */
  resume(): void {
    this.ensureOpen();
    this.send({ action: "$resume", id: newId("resume"), payload: {} });
  }

  private system(action: ClientFrame["action"], target: string | undefined, raiseError = true): Promise<KnownServerMessage> {
    this.ensureOpen();
    const id = newId(action.slice(1));
    const frame = { action, id, payload: target === undefined ? {} : { request_id: target } } as ClientFrame;
    return new Promise<KnownServerMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.calls.delete(id);
        reject(new RequestTimeoutError(`No answer to ${action} within ${this.options.systemTimeoutMs} ms`));
      }, this.options.systemTimeoutMs);
      this.timers.add(timer);
      const done = (): void => {
        clearTimeout(timer);
        this.timers.delete(timer);
        this.calls.delete(id);
      };
      this.calls.set(id, {
        frame,
        target,
        waiter: {
          resolve: (msg) => {
            done();
            if (raiseError && msg.type === "error") {
              reject(errorFromMessage({ ...msg, request_id: target ?? msg.request_id }));
            } else {
              resolve(msg);
            }
          },
          reject: (err) => {
            done();
            reject(err);
          },
        },
      });
      this.send(frame);
    });
  }

  // ------------------------------------------------------------------ socket
  private async tokenValue(): Promise<string | undefined> {
    const token = this.options.token;
    if (token === undefined || typeof token === "string") return token || undefined;
    const value = await token();
    return value ? String(value) : undefined;
  }

  private wsConstructor(): WebSocketConstructor {
    const ctor = this.options.WebSocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    if (!ctor) {
      throw new TypeError(
        "No WebSocket implementation: on Node 20 run with --experimental-websocket, or pass the " +
          "`ws` package as the WebSocket option",
      );
    }
    return ctor;
  }

  private async open(): Promise<WebSocketLike> {
    const token = await this.tokenValue();
    let url = this.url;
    let protocols: string[] = [SUBPROTOCOL];
    if (token && this.options.tokenIn === "subprotocol") {
      protocols = [SUBPROTOCOL, token];
    } else if (token) {
      url += `${url.includes("?") ? "&" : "?"}token=${encodeURIComponent(token)}`;
    }
    const Ctor = this.wsConstructor();
    const ws = new Ctor(url, protocols);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        ws.onopen = ws.onclose = ws.onerror = null;
        try {
          ws.close();
        } catch {
          // not open yet
        }
        reject(new ServiceUnavailableError(`Cannot connect to ${this.url}: no answer within ${this.options.connectTimeoutMs} ms`));
      }, this.options.connectTimeoutMs);
      let failed = false;
      const fail = (code: number): void => {
        // Some implementations fire only "error" for a refused upgrade, others "error" then "close".
        if (failed) return;
        failed = true;
        clearTimeout(timer);
        ws.onopen = ws.onclose = ws.onerror = null;
        this.refusal(token, code).then(reject, reject);
      };
      ws.onopen = () => {
        clearTimeout(timer);
        resolve();
      };
      ws.onerror = () => fail(1006);
      ws.onclose = (ev) => fail(ev.code);
    });
    return ws;
  }

  /**
   * Why the handshake failed. The WebSocket API hides the HTTP status of a refused upgrade, so
   * the same URL is asked once over HTTP (the gateway checks the token before the upgrade and
   * answers 401/403 with the code); where that answer cannot be read (another origin without
   * CORS, or no fetch), the failure is ServiceUnavailableError.
   */
  private async refusal(token: string | undefined, code: number): Promise<StreamerError> {
    const fetchFn = (globalThis as { fetch?: typeof fetch }).fetch;
    const httpUrl = this.url.replace(/^ws(s?):/i, "http$1:");
    const here = (globalThis as { location?: { origin?: string } }).location?.origin;
    // In a page of another origin the answer is unreadable without CORS, and asking would only
    // log a console error, so ask only from Node or from the gateway's own origin.
    if (fetchFn && (here === undefined || here === new URL(httpUrl).origin)) {
      try {
        const headers: Record<string, string> = token ? { Authorization: `Bearer ${token}` } : {};
        const resp = await fetchFn(httpUrl, { headers });
        if (resp.status === 401 || resp.status === 403) {
          let message = resp.status === 401 ? "The server refused the token" : "The server refused the connection";
          try {
            const body = (await resp.json()) as { error?: { message?: string } };
            if (body?.error?.message) message = `${message}: ${body.error.message}`;
          } catch {
            // not JSON
          }
          return resp.status === 401 ? new UnauthorizedError(message) : new ForbiddenError(message);
        }
      } catch {
        // unreachable, or not readable from this origin
      }
    }
    return new ServiceUnavailableError(`Cannot connect to ${this.url} (WebSocket closed with ${code})`);
  }

  private attach(ws: WebSocketLike): void {
    this.ws = ws;
    this.lastMessageAt = Date.now();
    this.pingSentAt = undefined;
    ws.onmessage = (ev) => {
      this.lastMessageAt = Date.now();
      const text = typeof ev.data === "string" ? ev.data : String(ev.data);
      let msg: unknown;
      try {
        msg = JSON.parse(text);
      } catch {
        console.warn("streamer: the server sent a frame that is not JSON");
        return;
      }
      if (msg && typeof msg === "object" && !Array.isArray(msg)) this.dispatch(msg as ServerMessage);
    };
    ws.onerror = () => undefined;
    ws.onclose = (ev) => {
      if (this.ws === ws) void this.lost(ev.code, ev.reason);
    };
  }

  /** Stop listening to a socket we consider dead, close it, and carry on as if it had closed. */
  private abandon(ws: WebSocketLike, code: number): void {
    ws.onclose = ws.onmessage = ws.onerror = null;
    try {
      ws.close(4000, "heartbeat timeout");
    } catch {
      // already closing
    }
    if (this.ws === ws) void this.lost(code);
  }

  /**
   * One tick: send a `$ping` unless one is still unanswered; a ping with no message at all after
   * it for 2.5 x the interval means a dead connection. Measured from our own ping, not from the
   * last message, so a browser that throttles timers in a background tab (ticks once a minute)
   * does not mistake its own silence for the server's.
   */
  private heartbeat(intervalMs: number): void {
    const ws = this.ws;
    if (!ws || this.stateValue !== "open") return;
    const now = Date.now();
    if (this.pingSentAt !== undefined && this.lastMessageAt < this.pingSentAt) {
      if (now - this.pingSentAt > intervalMs * 2.5) {
        console.warn(`streamer: no answer to $ping for ${(now - this.pingSentAt) / 1000}s; treating the connection as dead`);
        this.abandon(ws, 4000);
      }
      return;
    }
    if (ws.readyState === OPEN) {
      ws.send(JSON.stringify({ action: "$ping" }));
      this.pingSentAt = now;
    }
  }

  private async lost(code: number, reason?: string): Promise<void> {
    this.lastCloseCode = code;
    this.lastCloseReason = reason || undefined;
    this.ws = undefined;
    if (this.closing) return;
    if (!this.options.reconnect || NO_RECONNECT_CODES.has(code)) {
      this.failAll(new ConnectionClosedError(`Connection closed by the server (code ${code})`));
      this.setState("closed");
      return;
    }
    this.setState("reconnecting");
    if (await this.reconnectLoop()) {
      this.setState("open");
      this.reattach();
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        resolve();
      }, ms);
      this.timers.add(timer);
    });
  }

  /**
   * Reconnect with exponential backoff and jitter. After a drain (1001 with `reconnect_after_ms=N`)
   * the first attempt waits N ms (at most `reconnectMaxDelayMs`) plus jitter, so a drained gateway's
   * clients come back spread out as it asked; with several URLs every attempt tries another gateway
   * than the one that just closed or failed.
   */
  private async reconnectLoop(): Promise<boolean> {
    let delay = this.options.reconnectDelayMs;
    const max = this.options.maxReconnectAttempts === undefined ? 30 : this.options.maxReconnectAttempts;
    const hint = this.lastCloseCode === GOING_AWAY ? reconnectHint(this.lastCloseReason) : undefined;
    let failed = this.urlValue;
    for (let attempt = 1; !this.closing; attempt++) {
      if (attempt === 1 && hint !== undefined) {
        // The draining gateway picked this client's moment; a little jitter on top.
        await this.sleep(Math.min(hint, this.options.reconnectMaxDelayMs) + Math.random() * (delay / 2));
      } else {
        await this.sleep(delay / 2 + Math.random() * (delay / 2)); // jitter: [delay/2, delay)
      }
      if (this.closing) return false;
      const others = this.urls.filter((u) => u !== failed);
      const pool = others.length > 0 ? others : this.urls;
      this.urlValue = pool[Math.floor(Math.random() * pool.length)]!;
      failed = this.urlValue;
      try {
        const ws = await this.open();
        if (this.closing) {
          ws.close(1000, "client closed");
          return false;
        }
        this.attach(ws);
        this.reconnects += 1;
        return true;
      } catch (err) {
        if (err instanceof UnauthorizedError || err instanceof ForbiddenError) {
          this.failAll(err);
          this.setState("closed");
          return false;
        }
        this.reconnectFailures += 1;
        if (max !== null && attempt >= max) {
          this.failAll(new ConnectionClosedError(`Gave up reconnecting after ${attempt} attempts: ${String(err)}`));
          this.setState("closed");
          return false;
        }
        delay = Math.min(delay * 2, this.options.reconnectMaxDelayMs);
      }
    }
    return false;
  }

  /** After a reconnect: re-send unacknowledged frames, `$resume`, re-subscribe, re-send system calls. */
  private reattach(): void {
    const pending = [...this.requests.values()].filter((h) => !h.done);
    for (const handle of pending) {
      if (handle.frame && !handle.acknowledged) this.send(handle.frame);
    }
    if (pending.some((h) => h.frame && h.acknowledged)) this.sendAutoResume(0);
    for (const handle of pending) {
      if (!handle.frame && handle.subscribed) {
        this.send({ action: "$subscribe", id: newId("sub"), payload: { request_id: handle.requestId } });
      }
    }
    for (const call of this.calls.values()) this.send(call.frame);
    const since = Date.now();
    if (pending.some((h) => h.frame && h.acknowledged)) {
      void this.sleep(this.options.resumeGraceMs).then(() => this.followUnanswered(since));
    }
  }

  /**
   * `$resume` answers a user's unfinished requests and those finished in the last minutes (a
   * bounded number). A request of this client that it did not mention (finished long ago while
   * the client was away, or crowded out) is asked for by `$subscribe`: it answers the request's
   * stored state, its outcome if over, and attaches it if not. So every pending promise settles,
   * whatever the request's age. Sent in small batches, well under the gateway's rate limit.
   */
  private async followUnanswered(since: number): Promise<void> {
    const silent = [...this.requests.values()].filter((h) => !h.done && h.frame && h.acknowledged && h.lastSeenAt < since);
    for (let i = 0; i < silent.length; i += 20) {
      if (this.closing || this.stateValue !== "open") return; // the next reconnect starts over
      for (const handle of silent.slice(i, i + 20)) {
        if (!handle.done) this.send({ action: "$subscribe", id: newId("sub"), payload: { request_id: handle.requestId } });
      }
      await this.sleep(250);
    }
  }

  private sendAutoResume(retry: number, cursor?: string): void {
    const id = newId("resume");
    this.autoResumes.set(id, [retry, cursor]);
    this.send({ action: "$resume", id, payload: cursor ? { cursor } : {} });
  }

  /** Send when open; frames that matter are re-sent by `reattach` after a reconnect anyway. */
  private send(frame: ClientFrame): void {
    const ws = this.ws;
    if (ws && ws.readyState === OPEN && this.stateValue === "open") ws.send(JSON.stringify(frame));
  }

  private ensureOpen(): void {
    if (this.closedError) throw this.closedError;
    if (this.closing) throw new ConnectionClosedError("Client closed");
  }

  private setState(state: ConnectionState): void {
    if (this.stateValue === state) return;
    this.stateValue = state;
    try {
      this.options.onStateChange?.(state);
    } catch (err) {
      console.error("onStateChange threw", err);
    }
  }

  // ------------------------------------------------------------------ reading
  /** Route one server message (public for tests that feed messages directly). */
  dispatch(raw: ServerMessage): void {
    try {
      this.options.onMessage?.(raw);
    } catch (err) {
      console.error("onMessage threw", err);
    }
    if (typeof raw.type !== "string" || !KNOWN_TYPES.has(raw.type)) return; // a published message
    const msg = raw as KnownServerMessage;
    const rid = typeof msg.request_id === "string" ? msg.request_id : undefined;
    if (msg.type === "pong" && rid === undefined) {
      for (const [id, call] of this.calls) {
        if (call.frame.action === "$ping") {
          call.waiter.resolve(msg);
          this.calls.delete(id);
          break;
        }
      }
      return;
    }
    if (rid === undefined) {
      if (msg.type === "error") this.orphanError(msg);
      return;
    }
    if (msg.type === "status" && msg.resumed && typeof msg.resume_cursor === "string" && msg.resume_cursor) {
      this.sendAutoResume(0, msg.resume_cursor); // a paged $resume: ask for the next page
    }
    const auto = this.autoResumes.get(rid);
    if (auto !== undefined) {
      const [retry, cursor] = auto;
      // only a refusal names the $resume frame itself: send it again when the refusal is retryable
      this.autoResumes.delete(rid);
      if (msg.type === "error" && msg.error.retryable && retry < MAX_RESUME_RETRIES) {
        void this.sleep(Math.min(5000, 250 * 2 ** (retry + 1))).then(() => {
          if (!this.closing && !this.closedError) this.sendAutoResume(retry + 1, cursor);
        });
      }
      return;
    }
    const call = this.calls.get(rid);
    if (call) {
      // the answer names the system frame itself
      call.waiter.resolve(msg);
      return;
    }
    if (msg.type === "status" || msg.type === "error") {
      for (const waiting of this.calls.values()) {
        if (waiting.target === rid) {
          waiting.waiter.resolve(msg);
          if (msg.type === "error" && SYSTEM_FAILURES.has(msg.error.code)) return; // the call failed, not the request
          break;
        }
      }
    }
    this.requests.get(rid)?.feed(msg);
  }

  /**
   * An error that names no request: a frame the gateway refused before parsing it.
   * PAYLOAD_TOO_LARGE carries the frame's size, which identifies the request; RATE_LIMITED is
   * attributed only when exactly one request is unanswered.
   */
  private orphanError(msg: ErrorMessage): void {
    const unanswered = [...this.requests.values()].filter((h) => h.frame && !h.acknowledged && !h.done);
    const details = msg.error.details as { size?: unknown } | undefined;
    const size = details && typeof details === "object" ? details.size : undefined;
    if (typeof size === "number") {
      const encoder = new TextEncoder();
      for (const handle of unanswered) {
        if (encoder.encode(JSON.stringify(handle.frame)).length === size) {
          handle.feed({ ...msg, request_id: handle.requestId });
          return;
        }
      }
    }
    if (msg.error.code === "RATE_LIMITED" && unanswered.length === 1) {
      const only = unanswered[0]!;
      only.feed({ ...msg, request_id: only.requestId });
      return;
    }
    console.warn("streamer: server error without a request id", msg.error);
  }

  private failAll(error: StreamerError): void {
    this.closedError = this.closing ? new ConnectionClosedError("Client closed") : error;
    const Cls = error.constructor as new (message: string, options?: object) => StreamerError;
    for (const handle of [...this.requests.values()]) {
      handle.finish(undefined, new Cls(error.message, { requestId: handle.requestId }));
    }
    for (const call of [...this.calls.values()]) call.waiter.reject(new Cls(error.message));
    this.calls.clear();
  }

  /** @internal */
  finished(handle: RequestHandle): void {
    if (this.requests.get(handle.requestId) === handle) this.requests.delete(handle.requestId);
    this.finishedIds.set(handle.requestId, handle);
    while (this.finishedIds.size > FINISHED_KEPT) {
      const oldest = this.finishedIds.keys().next().value as string;
      this.finishedIds.delete(oldest);
    }
  }
}
