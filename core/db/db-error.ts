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
