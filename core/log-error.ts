/**
 * How an error appears in the logs: its kind, a message without personal
 * data, its code, and the stack's frames. Logs travel further than the
 * database (shippers, tickets, screenshots), so what reaches them must not
 * carry locations, names or tokens:
 *
 * - drizzle's DrizzleQueryError puts the query's parameters (an owner's
 *   signals, a handle, a digest) in its message and in a `params` property;
 *   only the SQL text, which has placeholders, is kept;
 * - PostgreSQL errors carry values in `detail` ("Key (handle)=(alice)
 *   already exists") and `where`; only the SQLSTATE code and the names of
 *   the constraint, table and column are kept;
 * - any other property an error carries is dropped, and messages are cut
 *   to a bounded length.
 */
export interface LoggedError {
  readonly type: string;
  readonly message: string;
  readonly code?: string;
  readonly constraint?: string;
  readonly table?: string;
  readonly column?: string;
  readonly stack?: string;
  readonly cause?: LoggedError;
}

const MAX_MESSAGE = 500;
const MAX_DEPTH = 4;

export function errorForLog(value: unknown, depth = 0): LoggedError {
  if (!(value instanceof Error)) return { type: typeof value, message: typeof value === 'string' ? cut(safeMessage(value)) : '(not an Error)' };
  const message = cut(safeMessage(value.message));
  const fields = value as Error & { code?: unknown; constraint?: unknown; table?: unknown; column?: unknown };
  const out: { -readonly [K in keyof LoggedError]: LoggedError[K] } = { type: value.name, message };
  if (typeof fields.code === 'string' || typeof fields.code === 'number') out.code = String(fields.code);
  if (typeof fields.constraint === 'string') out.constraint = fields.constraint;
  if (typeof fields.table === 'string') out.table = fields.table;
  if (typeof fields.column === 'string') out.column = fields.column;
  // The stack's first lines repeat the message: the frames are kept, the message replaced.
  if (typeof value.stack === 'string') out.stack = `${value.name}: ${message}\n${frames(value.stack)}`;
  if (value.cause !== undefined && depth < MAX_DEPTH) out.cause = errorForLog(value.cause, depth + 1);
  return out;
}

function safeMessage(message: string): string {
  // DrizzleQueryError: "Failed query: {sql}\nparams: {values}".
  if (message.startsWith('Failed query:')) {
    const cut = message.indexOf('\nparams:');
    return cut >= 0 ? message.slice(0, cut) : message;
  }
  return message;
}

function frames(stack: string): string {
  return stack
    .split('\n')
    .filter((line) => /^\s+at /.test(line))
    .join('\n');
}

function cut(text: string): string {
  return text.length > MAX_MESSAGE ? `${text.slice(0, MAX_MESSAGE)}…` : text;
}
