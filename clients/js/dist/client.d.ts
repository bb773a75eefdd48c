import { StreamerError } from "./errors.js";
import type { ClientFrame, ErrorMessage, JsonObject, KnownServerMessage, ProgressMessage, ServerMessage, StatusMessage } from "./protocol.js";
/** What a request's `events()` yields. */
export type RequestEvent = KnownServerMessage;
/** The constructor of a WebSocket: the global one (browsers, Node 22+) or e.g. the `ws` package's. */
export interface WebSocketLike {
    readonly readyState: number;
    readonly protocol: string;
    onopen: ((ev: unknown) => unknown) | null;
    onmessage: ((ev: {
        data: unknown;
    }) => unknown) | null;
    onclose: ((ev: {
        code: number;
        reason: string;
    }) => unknown) | null;
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
export declare const DEFAULT_MAX_FRAME_BYTES: number;
export declare const NO_RECONNECT_CODES: ReadonlySet<number>;
/**
 * Milliseconds a close reason asks the client to wait before reconnecting, if it says:
 * a draining gateway closes each socket with 1001 and `server shutting down; reconnect_after_ms=N`,
 * N spread over its sockets so they do not all come back at once.
 */
export declare function reconnectHint(reason: string | undefined): number | undefined;
/** Whether a server message ends its request (result, error, or a terminal status). */
export declare function isTerminal(msg: {
    type: string;
    status?: unknown;
}): boolean;
/** A request the client follows: its own (`start`/`request`) or one it subscribed to. */
export declare class RequestHandle {
    readonly requestId: string;
    readonly action: string | undefined;
    /** The frame that started it; re-sent after a reconnect until acknowledged. Undefined for subscriptions. */
    readonly frame: ClientFrame | undefined;
    onProgress: ((progress: Progress) => void) | undefined;
    /** Every message received for this request, in order. */
    readonly messages: RequestEvent[];
    acknowledged: boolean;
    subscribed: boolean;
    /** @internal When the client last received a message of this request (ms since the epoch). */
    lastSeenAt: number;
    /** PENDING, PROCESSING, COMPLETED, FAILED or CANCELLED, as far as the client knows. */
    status: string | undefined;
    percentage: number;
    done: boolean;
    private readonly client;
    private readonly seenProgress;
    private readonly listeners;
    private readonly promise;
    private settle;
    constructor(client: StreamerClient, requestId: string, action?: string, frame?: ClientFrame);
    /** The result (sync `data` or async `result`); rejects with the request's typed error. */
    result(): Promise<unknown>;
    /** Every message of this request, from the first the client saw; ends after the terminal one. */
    events(): AsyncGenerator<RequestEvent, void, undefined>;
    /** `$cancel` this request. */
    cancel(): Promise<StatusMessage | ErrorMessage>;
    /** @internal */
    feed(msg: RequestEvent): void;
    /** @internal */
    finish(result: unknown, error?: StreamerError): void;
}
/**
 * Open a connection: `const client = await connect("wss://host/ws", { token })`. Several URLs
 * (gateways of one deployment) make each reconnect try another one than the one just lost.
 */
export declare function connect(url: string | readonly string[], options?: ClientOptions): Promise<StreamerClient>;
export declare class StreamerClient {
    /** Every gateway URL given; the first is tried first. */
    readonly urls: readonly string[];
    /** How many times the connection was re-established. */
    reconnects: number;
    /** The close code of the last socket that closed. */
    lastCloseCode: number | undefined;
    /** The close reason of the last socket that closed (a draining gateway's carries `reconnect_after_ms`). */
    lastCloseReason: string | undefined;
    /** Reconnect attempts that failed (refused upgrades, unreachable gateways). */
    reconnectFailures: number;
    private urlValue;
    private readonly options;
    private ws;
    private stateValue;
    private closing;
    private closedError;
    private lastMessageAt;
    private pingSentAt;
    private heartbeatTimer;
    private readonly requests;
    private readonly finishedIds;
    private readonly calls;
    /** ids of automatic `$resume` frames in flight -> [retry count, page cursor] */
    private readonly autoResumes;
    private readonly timers;
    constructor(url: string | readonly string[], options?: ClientOptions);
    /** The URL in use (or last tried). */
    get url(): string;
    /** "connecting", "open", "reconnecting" or "closed". */
    get state(): ConnectionState;
    /** Whether the socket is open right now. */
    get connected(): boolean;
    /** Open the WebSocket; rejects with UnauthorizedError, ForbiddenError or ServiceUnavailableError. */
    connect(): Promise<void>;
    /** Close the connection; pending requests reject with ConnectionClosedError. */
    close(): void;
    /** Drop the socket as a network failure would (tests, demos); the client then reconnects. */
    dropConnection(): void;
    /** The handle of a request this client follows (or recently finished). */
    handle(requestId: string): RequestHandle | undefined;
    /** Send a request and return its handle at once (await `handle.result()` for the outcome). */
    start(action: string, payload?: JsonObject, options?: RequestOptions): RequestHandle;
    /**
     * Run a request: resolves with its result (a sync `response`'s `data` or an async `complete`'s
     * `result`) or rejects with the StreamerError subclass of its error code.
     */
    request(action: string, payload?: JsonObject, options?: RequestOptions): Promise<unknown>;
    /** Every message of a request, from the first the client saw; ends after the terminal one. */
    events(requestId: string): AsyncGenerator<RequestEvent, void, undefined>;
    /** `$ping`: resolves with the `pong`. */
    ping(): Promise<KnownServerMessage>;
    /** `$status`: the request's stored state. NotFoundError for an unknown request or one of another tenant. */
    status(requestId: string): Promise<StatusMessage>;
    /** `$cancel`: the server's answer (a CANCELLED answer is success, not an error). */
    cancel(requestId: string): Promise<StatusMessage | ErrorMessage>;
    /** `$subscribe` to a request of your tenant started elsewhere; re-subscribed after a reconnect. */
    subscribe(requestId: string): Promise<RequestHandle>;
    /** `$unsubscribe`: stop receiving a request's messages; its subscription handle rejects with RequestCancelledError. */
    unsubscribe(requestId: string): Promise<StatusMessage>;
    /** `$resume`: re-attach this user's unfinished requests (sent automatically after a reconnect). */
    resume(): void;
    private system;
    private tokenValue;
    private wsConstructor;
    private open;
    /**
     * Why the handshake failed. The WebSocket API hides the HTTP status of a refused upgrade, so
     * the same URL is asked once over HTTP (the gateway checks the token before the upgrade and
     * answers 401/403 with the code); where that answer cannot be read (another origin without
     * CORS, or no fetch), the failure is ServiceUnavailableError.
     */
    private refusal;
    private attach;
    /** Stop listening to a socket we consider dead, close it, and carry on as if it had closed. */
    private abandon;
    /**
     * One tick: send a `$ping` unless one is still unanswered; a ping with no message at all after
     * it for 2.5 x the interval means a dead connection. Measured from our own ping, not from the
     * last message, so a browser that throttles timers in a background tab (ticks once a minute)
     * does not mistake its own silence for the server's.
     */
    private heartbeat;
    private lost;
    private sleep;
    /**
     * Reconnect with exponential backoff and jitter. After a drain (1001 with `reconnect_after_ms=N`)
     * the first attempt waits N ms (at most `reconnectMaxDelayMs`) plus jitter, so a drained gateway's
     * clients come back spread out as it asked; with several URLs every attempt tries another gateway
     * than the one that just closed or failed.
     */
    private reconnectLoop;
    /** After a reconnect: re-send unacknowledged frames, `$resume`, re-subscribe, re-send system calls. */
    private reattach;
    /**
     * `$resume` answers a user's unfinished requests and those finished in the last minutes (a
     * bounded number). A request of this client that it did not mention (finished long ago while
     * the client was away, or crowded out) is asked for by `$subscribe`: it answers the request's
     * stored state, its outcome if over, and attaches it if not. So every pending promise settles,
     * whatever the request's age. Sent in small batches, well under the gateway's rate limit.
     */
    private followUnanswered;
    private sendAutoResume;
    /** Send when open; frames that matter are re-sent by `reattach` after a reconnect anyway. */
    private send;
    private ensureOpen;
    private setState;
    /** Route one server message (public for tests that feed messages directly). */
    dispatch(raw: ServerMessage): void;
    /**
     * An error that names no request: a frame the gateway refused before parsing it.
     * PAYLOAD_TOO_LARGE carries the frame's size, which identifies the request; RATE_LIMITED is
     * attributed only when exactly one request is unanswered.
     */
    private orphanError;
    private failAll;
    /** @internal */
    finished(handle: RequestHandle): void;
}
