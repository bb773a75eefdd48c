// Typed errors: one class per error code of the protocol (the same names as the Python client).
import type { ErrorCode, ErrorMessage } from "./protocol.js";

const RETRYABLE: ReadonlySet<string> = new Set(["RATE_LIMITED", "SERVICE_UNAVAILABLE", "TIMEOUT", "INTERNAL_ERROR"]);

export interface StreamerErrorOptions {
  details?: unknown;
  retryable?: boolean;
  requestId?: string;
  cause?: unknown;
}

/** Every error of the client: `code` is the protocol's error code. */
export class StreamerError extends Error {
  readonly code: ErrorCode | string;
  readonly details: unknown;
  readonly retryable: boolean;
  readonly requestId: string | undefined;

  constructor(code: ErrorCode | string, message: string, options: StreamerErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.details = options.details;
    this.retryable = options.retryable ?? RETRYABLE.has(code);
    this.requestId = options.requestId;
  }
}

type Sub = new (message: string, options?: StreamerErrorOptions) => StreamerError;

function sub(code: ErrorCode): Sub {
  return class extends StreamerError {
    constructor(message: string, options: StreamerErrorOptions = {}) {
      super(code, message, options);
    }
  };
}

// Named classes (not anonymous), so `instanceof` and `error.name` read well.
export class ValidationError extends sub("VALIDATION_ERROR") {}
export class InvalidActionError extends sub("INVALID_ACTION") {}
export class PayloadTooLargeError extends sub("PAYLOAD_TOO_LARGE") {}
export class UnauthorizedError extends sub("UNAUTHORIZED") {}
export class ForbiddenError extends sub("FORBIDDEN") {}
export class NotFoundError extends sub("NOT_FOUND") {}
export class DuplicateRequestError extends sub("DUPLICATE_REQUEST") {}
export class RateLimitedError extends sub("RATE_LIMITED") {}
/** The server's TIMEOUT, or the client's own `timeoutMs` running out. */
export class RequestTimeoutError extends sub("TIMEOUT") {}
/** CANCELLED: by `$cancel`, by an `AbortSignal`, or by the server. */
export class RequestCancelledError extends sub("CANCELLED") {}
export class ProcessingFailedError extends sub("PROCESSING_FAILED") {}
/** An async result over the server's stored-result limit (a Streamer addition to the original codes). */
export class ResultTooLargeError extends sub("RESULT_TOO_LARGE") {}
export class ServiceUnavailableError extends sub("SERVICE_UNAVAILABLE") {}
export class InternalError extends sub("INTERNAL_ERROR") {}
/** The connection is gone for good (closed, refused, or the client gave up reconnecting). */
export class ConnectionClosedError extends ServiceUnavailableError {}

const BY_CODE: Record<ErrorCode, Sub> = {
  VALIDATION_ERROR: ValidationError,
  INVALID_ACTION: InvalidActionError,
  PAYLOAD_TOO_LARGE: PayloadTooLargeError,
  UNAUTHORIZED: UnauthorizedError,
  FORBIDDEN: ForbiddenError,
  NOT_FOUND: NotFoundError,
  DUPLICATE_REQUEST: DuplicateRequestError,
  RATE_LIMITED: RateLimitedError,
  TIMEOUT: RequestTimeoutError,
  CANCELLED: RequestCancelledError,
  PROCESSING_FAILED: ProcessingFailedError,
  RESULT_TOO_LARGE: ResultTooLargeError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  INTERNAL_ERROR: InternalError,
};

/** The class of an error code (StreamerError itself for a code this client does not know). */
export function errorClass(code: string): Sub | undefined {
  return (BY_CODE as Record<string, Sub>)[code];
}

/** The typed error of an `error` message (or of a terminal status's `error` object). */
export function errorFromMessage(msg: Pick<ErrorMessage, "error" | "request_id">): StreamerError {
  const err = msg.error ?? { code: "INTERNAL_ERROR", message: "error without details" };
  const options: StreamerErrorOptions = {
    details: err.details,
    requestId: typeof msg.request_id === "string" ? msg.request_id : undefined,
  };
  if (typeof err.retryable === "boolean") options.retryable = err.retryable;
  const cls = errorClass(String(err.code));
  const message = typeof err.message === "string" ? err.message : String(err.code);
  return cls ? new cls(message, options) : new StreamerError(String(err.code), message, options);
}
