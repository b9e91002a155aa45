import { DrizzleQueryError } from 'drizzle-orm';

/**
 * A database error fit for a log line. drizzle's DrizzleQueryError puts the
 * statement's parameters in its message and fields; for the write-behind
 * those are owners' signals (positions, network digests), retained sensor
 * events and access-log entries, which must not reach the logs (logs carry
 * ids and reasons, never payloads: core/log.ts), and which made every
 * failed round during a PostgreSQL outage log tens of kilobytes (seen in
 * tests/integration/faults.test.ts). Kept: the driver's message and code
 * (ECONNREFUSED, 57P01, ...) and the start of the statement, whose values
 * are all $n parameters.
 */
export interface LoggableDbError {
  readonly message: string;
  readonly code?: string;
  readonly statement?: string;
}

export function loggableDbError(error: unknown): LoggableDbError {
  if (error instanceof DrizzleQueryError) {
    const statement = error.query.replace(/\s+/g, ' ').trim().slice(0, 80);
    return { ...driverError(error.cause), statement };
  }
  return driverError(error);
}

function driverError(error: unknown): { message: string; code?: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  const code = (error as { code?: unknown }).code;
  // An AggregateError (every address of a host refused) has an empty message of its own.
  const message = error.message || (error instanceof AggregateError ? error.errors.map((e: unknown) => (e instanceof Error ? e.message : String(e))).join('; ') : error.name);
  return typeof code === 'string' ? { message, code } : { message };
}

// PostgreSQL's SQLSTATE classes and codes meaning "the server cannot be
// reached or is going away" (Appendix A): 08 connection exception, 57P01
// admin shutdown, 57P02 crash shutdown, 57P03 cannot connect now. Node's
// socket errors mean the same before a session exists.
// Also "the server did not get to it in time": 57014 query_canceled (our
// statement_timeout, core/db/statement-timeout.ts, or an operator's
// pg_cancel_backend) and 55P03 lock_not_available (a lock_timeout an
// operator set on the role). The statement itself was fine; the same
// request may succeed once the lock or the stall is gone.
const UNAVAILABLE_CODES = new Set(['57P01', '57P02', '57P03', '57014', '55P03', 'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'EAI_AGAIN']);
// pg's own errors for a connection that ended, or for a server that did not
// answer in time (query_timeout), which carry no code.
const UNAVAILABLE_MESSAGES = /^(Connection terminated|Client has encountered a connection error|Client was closed and is not queryable|timeout exceeded when trying to connect|Query read timeout)/;

/**
 * Whether a failed statement failed because the database is unreachable
 * (down, restarting, refusing connections), not because of the statement:
 * the same request may succeed once it is back (an HTTP 503, not a 500).
 */
export function isDatabaseUnavailable(error: unknown): boolean {
  const cause = error instanceof DrizzleQueryError ? error.cause : error;
  if (!(cause instanceof Error)) return false;
  const code = (cause as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_CODES.has(code) || code.startsWith('08'))) return true;
  if (cause instanceof AggregateError) return cause.errors.some((e: unknown) => isDatabaseUnavailable(e));
  return UNAVAILABLE_MESSAGES.test(cause.message);
}

/**
 * Whether a statement failed because the server sent no answer within pg's
 * query_timeout. pg leaves such a statement in flight on its connection:
 * that connection must be closed, not reused (core/db/pg-pool.ts).
 */
export function isQueryReadTimeout(error: unknown): boolean {
  const cause = error instanceof DrizzleQueryError ? error.cause : error;
  return cause instanceof Error && cause.message === 'Query read timeout';
}
