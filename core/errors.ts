/**
 * The one error catalog. Every HTTP error body is `{ code, message }` with a
 * code from here; every refused MQTT payload is counted under a reason from
 * here. Codes are stable: clients and dashboards key on them, so never rename
 * one, only add.
 */
export const httpErrors = {
  invalid_request: { status: 400, message: 'The request is not valid.' },
  /** An XML or JSON document in the body is malformed, unsafe or uses what the service does not support. */
  invalid_document: { status: 400, message: 'The document is not valid.' },
  unauthorized: { status: 401, message: 'A valid bearer token is required.' },
  forbidden: { status: 403, message: 'The token does not allow this operation.' },
  /** A block rule (RFC 5025 §3.2.1 `block`, not polite-block) refuses the access request itself. */
  request_refused: { status: 403, message: 'The owner does not accept this request.' },
  not_found: { status: 404, message: 'No such resource.' },
  method_not_allowed: { status: 405, message: 'Method not allowed.' },
  not_acceptable: { status: 406, message: 'None of the accepted media types can be produced.' },
  conflict: { status: 409, message: 'The resource already exists.' },
  /** RFC 3903 §6 (SIP 412 Conditional Request Failed): the If-Match entity tag names no live publication. */
  precondition_failed: { status: 412, message: 'No live publication has this entity tag.' },
  payload_too_large: { status: 413, message: 'The request body is too large.' },
  /** RFC 3903 §6 (SIP 423 Interval Too Brief): the Min-Expires header gives the minimum. */
  interval_too_brief: { status: 423, message: 'The expiry is too brief.' },
  /** RFC 6665 §8.3.2 (SIP 489 Bad Event): the only event package is presence. */
  bad_event: { status: 400, message: 'Unknown event package; only "presence" is supported.' },
  too_many_requests: { status: 429, message: 'Too many requests.' },
  /** The request's headers are larger than the server reads (RFC 6585 §5). */
  headers_too_large: { status: 431, message: 'The request headers are too large.' },
  /** An Expect header other than 100-continue (RFC 9110 §10.1.1). */
  expectation_failed: { status: 417, message: 'Only "Expect: 100-continue" is supported.' },
  /** The request did not arrive in time (headers or body too slow). */
  request_timeout: { status: 408, message: 'The request took too long to arrive.' },
  unsupported_media_type: { status: 415, message: 'The request media type is not supported.' },
  internal: { status: 500, message: 'Internal error.' },
  unavailable: { status: 503, message: 'The service is not ready.' },
} as const satisfies Record<string, { status: number; message: string }>;

export type HttpErrorCode = keyof typeof httpErrors;

export class AppError extends Error {
  readonly code: HttpErrorCode;
  readonly status: number;
  readonly details: readonly string[] | undefined;

  constructor(code: HttpErrorCode, message?: string, details?: readonly string[]) {
    super(message ?? httpErrors[code].message);
    this.name = 'AppError';
    this.code = code;
    this.status = httpErrors[code].status;
    this.details = details;
  }
}

/** Why an inbound MQTT message was refused. Used as a metric label. */
export const ingestRejections = [
  'payload_too_large',
  'malformed_json',
  'invalid_event',
  'bad_topic',
  'unknown_device',
  'clock_skew',
  /** More messages from one device than RATE_LIMIT_MQTT_DEVICE allows. */
  'rate_limited',
] as const;

export type IngestRejection = (typeof ingestRejections)[number];
