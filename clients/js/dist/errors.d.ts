import type { ErrorCode, ErrorMessage } from "./protocol.js";
export interface StreamerErrorOptions {
    details?: unknown;
    retryable?: boolean;
    requestId?: string;
    cause?: unknown;
}
/** Every error of the client: `code` is the protocol's error code. */
export declare class StreamerError extends Error {
    readonly code: ErrorCode | string;
    readonly details: unknown;
    readonly retryable: boolean;
    readonly requestId: string | undefined;
    constructor(code: ErrorCode | string, message: string, options?: StreamerErrorOptions);
}
type Sub = new (message: string, options?: StreamerErrorOptions) => StreamerError;
declare const ValidationError_base: Sub;
export declare class ValidationError extends ValidationError_base {
}
declare const InvalidActionError_base: Sub;
export declare class InvalidActionError extends InvalidActionError_base {
}
declare const PayloadTooLargeError_base: Sub;
export declare class PayloadTooLargeError extends PayloadTooLargeError_base {
}
declare const UnauthorizedError_base: Sub;
export declare class UnauthorizedError extends UnauthorizedError_base {
}
declare const ForbiddenError_base: Sub;
export declare class ForbiddenError extends ForbiddenError_base {
}
declare const NotFoundError_base: Sub;
export declare class NotFoundError extends NotFoundError_base {
}
declare const DuplicateRequestError_base: Sub;
export declare class DuplicateRequestError extends DuplicateRequestError_base {
}
declare const RateLimitedError_base: Sub;
export declare class RateLimitedError extends RateLimitedError_base {
}
declare const RequestTimeoutError_base: Sub;
/** The server's TIMEOUT, or the client's own `timeoutMs` running out. */
export declare class RequestTimeoutError extends RequestTimeoutError_base {
}
declare const RequestCancelledError_base: Sub;
/** CANCELLED: by `$cancel`, by an `AbortSignal`, or by the server. */
export declare class RequestCancelledError extends RequestCancelledError_base {
}
declare const ProcessingFailedError_base: Sub;
export declare class ProcessingFailedError extends ProcessingFailedError_base {
}
declare const ResultTooLargeError_base: Sub;
/** An async result over the server's stored-result limit (a Streamer addition to the original codes). */
export declare class ResultTooLargeError extends ResultTooLargeError_base {
}
declare const ServiceUnavailableError_base: Sub;
export declare class ServiceUnavailableError extends ServiceUnavailableError_base {
}
declare const InternalError_base: Sub;
export declare class InternalError extends InternalError_base {
}
/** The connection is gone for good (closed, refused, or the client gave up reconnecting). */
export declare class ConnectionClosedError extends ServiceUnavailableError {
}
/** The class of an error code (StreamerError itself for a code this client does not know). */
export declare function errorClass(code: string): Sub | undefined;
/** The typed error of an `error` message (or of a terminal status's `error` object). */
export declare function errorFromMessage(msg: Pick<ErrorMessage, "error" | "request_id">): StreamerError;
export {};
