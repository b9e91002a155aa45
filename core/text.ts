import { z } from 'zod';

/**
 * Printable text for names, notes and messages that may end up in XML and
 * logs: no C0 or C1 controls, no DEL, and nothing XML 1.0 §2.2 excludes
 * (U+FFFE, U+FFFF, unpaired surrogates). One check, used by every schema
 * that accepts such text.
 */
// eslint-disable-next-line no-control-regex -- finding control characters is the point
const NOT_PRINTABLE = /[\u0000-\u001F\u007F-\u009F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

export function isPrintableText(text: string): boolean {
  return !NOT_PRINTABLE.test(text);
}

/** A trimmed, non-empty, printable string of at most `max` characters: names, notes, messages. */
export function printableText(max: number) {
  return z.string().trim().min(1).max(max).refine(isPrintableText, 'must be printable text');
}

/** The owner's own words (RFC 3863 §4.1.5 note), from a manual status or a publication. */
export const noteSchema = printableText(200);
