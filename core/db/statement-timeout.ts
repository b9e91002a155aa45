/**
 * How long a statement of the service may run on PostgreSQL
 * (DATABASE_STATEMENT_TIMEOUT_MS). Without a bound, a server that accepts
 * connections but stalls (a lock an operator's session holds, a disk
 * stall) makes the write-behind, group commits and consent changes wait
 * for ever, each holding one of the pool's connections, until every later
 * query waits for one too.
 *
 * Two bounds, set on every connection of a pool:
 * - statement_timeout, enforced by the server: the statement is cancelled
 *   (SQLSTATE 57014, lock waits included), its transaction rolls back and
 *   the connection stays usable. The caller sees the database as
 *   unavailable (core/db/db-error.ts): the write-behind holds its rows and
 *   retries, HTTP answers 503.
 * - pg's query_timeout, enforced here, CLIENT_MARGIN_MS later: for a
 *   server that does not answer at all (packets dropped, a backend stuck in
 *   uninterruptible disk I/O, which statement_timeout cannot interrupt).
 *   pg then fails the query ("Query read timeout") but leaves it in flight
 *   on its connection, so that connection must be closed, never reused
 *   (core/db/pg-pool.ts).
 */

/**
 * The server's cancellation comes back within a round trip of the
 * deadline; only a server that answers nothing at all is still silent this
 * much later.
 */
export const CLIENT_MARGIN_MS = 5_000;

/**
 * For the few statements whose running time grows with what is stored
 * rather than with one request (an owner's erasure cascades through their
 * whole history; the retention purges scan whole tables): cutting them at
 * the ordinary limit would make them fail every time they are retried. Still
 * a bound, so a stalled server does not hold those connections for ever.
 */
export const LONG_STATEMENT_TIMEOUT_MS = 3_600_000;

/** The connection settings (node-postgres ClientConfig fields) for a statement limit. */
export function timeoutSettings(statementTimeoutMs: number): { statement_timeout: number; query_timeout: number } {
  return { statement_timeout: statementTimeoutMs, query_timeout: statementTimeoutMs + CLIENT_MARGIN_MS };
}
