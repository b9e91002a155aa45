import { z } from 'zod';

/** An owner's handle: the user part of their presentity `pres:{handle}@{PRESENCE_DOMAIN}`. */
export const handleSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,62}$/, 'must be 1-63 of a-z 0-9 . _ -, starting with a letter or digit');

/** RFC 4480 §3.3 device class, free text in the RFC; kept to a token here. */
export const deviceClassSchema = z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be 1-32 of a-z 0-9 -, starting with a letter');

export const displayNameSchema = z.string().trim().min(1).max(200);
