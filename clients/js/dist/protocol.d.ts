/** 1-128 printable ASCII characters, no spaces. */
export type RequestId = string;
/** ISO 8601 UTC with milliseconds, e.g. 2026-11-22T01:02:03.456Z. */
export type Timestamp = string;
/** Any JSON object. */
export type JsonObject = {
    [key: string]: unknown;
};
/** Every error code the server sends (DESIGN §2). */
export type ErrorCode = "VALIDATION_ERROR" | "INVALID_ACTION" | "PAYLOAD_TOO_LARGE" | "UNAUTHORIZED" | "FORBIDDEN" | "NOT_FOUND" | "DUPLICATE_REQUEST" | "RATE_LIMITED" | "TIMEOUT" | "CANCELLED" | "PROCESSING_FAILED" | "RESULT_TOO_LARGE" | "SERVICE_UNAVAILABLE" | "INTERNAL_ERROR";
/** A stored request's state. */
export type RequestStatus = "PENDING" | "PROCESSING" | "COMPLETED" | "FAILED" | "CANCELLED";
/** Names the request a system action is about (`request_id`, or `id` as an alias). */
export interface TargetPayload {
    request_id?: RequestId;
    id?: RequestId;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Run an action of a handler. Without an id the server makes one; re-sending an id is idempotent.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface RequestFrame {
    action: string;
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload?: JsonObject;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Keep-alive; answered with a pong by the gateway itself.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface PingFrame {
    action: "$ping";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload?: JsonObject;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** After a reconnect: re-attach this user's unfinished (or recently finished) requests to this connection; one status frame with resumed=true per request, newest first, in pages: an answer whose last frame carries resume_cursor continues with $resume {"cursor": resume_cursor}.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface ResumeFrame {
    action: "$resume";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload?: {
        /** The resume_cursor of the previous answer's last frame; absent for the first page. */
        cursor?: string;
        /** Fields this version of the schema does not list (the protocol allows them). */
        [key: string]: unknown;
    };
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Cancel a request: CANCELLED at once when queued, cancel_requested while it runs.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface CancelFrame {
    action: "$cancel";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload: TargetPayload;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Ask for a request's current state; NOT_FOUND for an unknown request or one of another tenant.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface StatusFrame {
    action: "$status";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload: TargetPayload;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Follow a request of your tenant started elsewhere.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface SubscribeFrame {
    action: "$subscribe";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload: TargetPayload;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Stop following a request.
 *
 * Send `id` or its alias `request_id`, not both. */
export interface UnsubscribeFrame {
    action: "$unsubscribe";
    /** The request's id (for a system action: this frame's id). */
    id?: RequestId;
    /** Alias of `id`. */
    request_id?: RequestId;
    payload: TargetPayload;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Any frame a client sends: one JSON object per text frame. */
export type ClientFrame = RequestFrame | PingFrame | CancelFrame | StatusFrame | SubscribeFrame | UnsubscribeFrame | ResumeFrame;
/** A sync request's answer. */
export interface ResponseMessage {
    type: "response";
    request_id: RequestId;
    success: true;
    /** The handler's result (any JSON). */
    data: unknown;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** An async request was stored and queued. */
export interface AcknowledgmentMessage {
    type: "acknowledgment";
    request_id: RequestId;
    status: "queued";
    message: string;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** A progress report of an async request; seq only increases (a replayed one may arrive twice). */
export interface ProgressMessage {
    type: "progress";
    request_id: RequestId;
    percentage: number;
    message: string;
    timestamp: Timestamp;
    seq: number;
    metadata?: JsonObject;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** An async request finished with a result. */
export interface CompleteMessage {
    type: "complete";
    request_id: RequestId;
    /** Sent for clients of the original Streamer. */
    success?: true;
    /** The handler's result (any JSON). */
    result: unknown;
    timestamp: Timestamp;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
export interface ErrorDetail {
    code: ErrorCode;
    message: string;
    /** Code-specific details, e.g. a list of {path, message} for VALIDATION_ERROR. */
    details?: unknown;
    retryable?: boolean;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** A request (or a frame) failed. Without request_id it is about a frame that could not be parsed. */
export interface ErrorMessage {
    type: "error";
    request_id?: RequestId;
    error: ErrorDetail;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** A request's stored state: answer to $status, $cancel, $subscribe, $unsubscribe, $resume (resumed=true) and to a re-sent id of a running request. A terminal status carries result or error. */
export interface StatusMessage {
    type: "status";
    request_id: RequestId;
    status: RequestStatus;
    percentage: number;
    message: string;
    action?: string;
    attempt?: number;
    created_at?: Timestamp;
    updated_at?: Timestamp;
    finished_at?: Timestamp;
    /** Present when status is COMPLETED. */
    result?: unknown;
    /** Present when status is FAILED or CANCELLED (code, message, details?). */
    error?: {
        [key: string]: unknown;
    };
    cancel_requested?: boolean;
    subscribed?: boolean;
    resumed?: boolean;
    /** On the last frame of a $resume answer when more remain: send $resume again with payload {"cursor": this} for the next page. */
    resume_cursor?: string;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** The server checks the client is alive. */
export interface PingMessage {
    type: "ping";
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Answer to $ping. */
export interface PongMessage {
    type: "pong";
    timestamp?: Timestamp;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** A message a backend pushed to a user, a tenant or a connection (Router.Publish); its type is "message" unless the backend chose another one. */
export interface PublishedMessage {
    type: string;
    /** Fields this version of the schema does not list (the protocol allows them). */
    [key: string]: unknown;
}
/** Any message the server sends: one JSON object per text frame. */
export type ServerMessage = ResponseMessage | AcknowledgmentMessage | ProgressMessage | CompleteMessage | StatusMessage | ErrorMessage | PingMessage | PongMessage | PublishedMessage;
/** A server message of a type the protocol defines (ServerMessage without PublishedMessage). */
export type KnownServerMessage = ResponseMessage | AcknowledgmentMessage | ProgressMessage | CompleteMessage | StatusMessage | ErrorMessage | PingMessage | PongMessage;
/** Every error code, in the schema's order. */
export declare const ERROR_CODES: readonly ErrorCode[];
/** The `type` of every server message the protocol defines (others are published messages). */
export declare const SERVER_MESSAGE_TYPES: readonly string[];
/** Request states that never change again. */
export declare const TERMINAL_STATUSES: readonly RequestStatus[];
