import { AppError } from '../core/errors.js';

/**
 * Cursors of newest-first pages (the access log, the admin actions):
 * opaque to clients, `{at}|{id}` inside, the total order the pages follow.
 */
export function encodeCursor(at: Date, id: number): string {
  return Buffer.from(`${at.toISOString()}|${id}`).toString('base64url');
}

export function decodeCursor(cursor: string): { at: Date; id: number } {
  const [at, id] = Buffer.from(cursor, 'base64url').toString('utf8').split('|');
  // Exactly what encodeCursor writes: an ISO instant in the years 1-9999 (PostgreSQL cannot read years like +010000 or 0000).
  const date = /^(?!0000)\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/.test(at ?? '') ? new Date(at ?? '') : new Date(NaN);
  const n = Number(id);
  if (Number.isNaN(date.getTime()) || !Number.isSafeInteger(n) || n < 0) throw new AppError('invalid_request', 'The cursor is not valid.');
  return { at: date, id: n };
}
