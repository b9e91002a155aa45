import { z } from 'zod';
import { printableText } from './text.js';

/** An owner's handle: the user part of their presentity `pres:{handle}@{PRESENCE_DOMAIN}`. */
export const HANDLE_PATTERN = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const handleSchema = z.string().regex(HANDLE_PATTERN, 'must be 1-63 of a-z 0-9 . _ -, starting with a letter or digit');

/** RFC 4480 §3.3 device class, free text in the RFC; kept to a token here. */
export const deviceClassSchema = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be 1-32 of a-z 0-9 -, starting with a letter');

/** Names of owners, devices and watchers: printable text (they reach XML, logs and PostgreSQL, which cannot hold U+0000). */
export const displayNameSchema = printableText(200);

/**
 * Ids the service issues are lower-case UUIDs, and only those are accepted:
 * PostgreSQL compares uuids ignoring case while memory compares strings
 * exactly, and the two must never disagree about which row is meant. (A
 * check, not a transform: the same schema also serializes responses.)
 */
export const idSchema = z.uuid().regex(/^[0-9a-f-]+$/, 'must be a lower-case UUID');

/** RFC 3863 §3.1 presentity URI of an owner. */
export function presentityUri(handle: string, domain: string): string {
  return `pres:${handle}@${domain}`;
}
