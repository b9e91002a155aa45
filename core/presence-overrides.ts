import { z } from 'zod';
import type { Derived } from './derive-presence.js';
import { activitySchema, availabilitySchema, NO_TRACE, type Activity, type Availability } from './presence.js';
import { noteSchema } from './text.js';

/**
 * What people and apps say, on top of what sensors say. Compare Microsoft
 * Graph's setUserPreferredPresence (the owner's own choice, with an expiry)
 * and setPresence (application sessions), and Slack's status expiration.
 *
 * Precedence:
 *   1. an unexpired manual status (source `manual`) replaces the derived
 *      availability, and its activities (if any) the derived ones; manual
 *      `offline` is "appear offline": no activities at all;
 *   2. otherwise every unexpired app session combines with the derived state:
 *      the most significant availability wins (do-not-disturb > busy >
 *      available > away > unknown > offline: an app in use beats idle, a call
 *      in an app beats available), and the activities are merged.
 */
export const overrideInputSchema = z
  .object({
    availability: availabilitySchema,
    activities: z.array(activitySchema).max(5).default([]),
    /** The owner's own words (RFC 3863 §4.1.5 note), shown only to watchers granted provide-note. */
    note: noteSchema.optional(),
    /** 1 minute to 7 days. */
    expiresInSeconds: z
      .number()
      .int()
      .min(60)
      .max(7 * 24 * 3600),
  })
  .strict();
export type OverrideInput = z.infer<typeof overrideInputSchema>;

export const sessionIdSchema = z.string().regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, 'must be 1-64 of a-z 0-9 . _ -');

export const MANUAL = 'manual';
/** Live app sessions per owner; a further one is refused until one ends or expires. */
export const MAX_SESSIONS = 16;
export const sessionSource = (id: string) => `session:${id}`;
/** A publication (RFC 3903 PUBLISH over HTTP): combined like an app session. */
export const PUBLICATION_PREFIX = 'publication:';
export const MAX_PUBLICATIONS = 16;

export interface PresenceOverride {
  /** `manual`, or `session:{id}`. */
  readonly source: string;
  readonly availability: Availability;
  readonly activities: readonly Activity[];
  readonly note?: string | undefined;
  /** Publications only (RFC 3903): the entity tag a refresh, modify or remove must name. */
  readonly etag?: string | undefined;
  /** ms since the epoch. */
  readonly expiresAt: number;
}

const significance: Record<Availability, number> = { 'do-not-disturb': 5, busy: 4, available: 3, away: 2, unknown: 1, offline: 0 };
const activityOrder: readonly Activity[] = activitySchema.options;

export function applyOverrides(derived: Derived, overrides: readonly PresenceOverride[], now: number): Derived {
  const live = overrides.filter((o) => o.expiresAt > now);
  if (live.length === 0) return derived;
  const validUntil = Math.min(derived.validUntil, ...live.map((o) => o.expiresAt));
  const state = derived.state;
  // A state derived without its trace (ingest, publications) gets none here
  // either: the owner's explanation is derived with it (derivePresence's
  // `explain`), and building these entries cost a date string per change.
  const explain = state.trace !== NO_TRACE;

  const manual = live.find((o) => o.source === MANUAL);
  if (manual) {
    const activities = manual.availability === 'offline' ? [] : manual.activities.length > 0 ? [...manual.activities] : [...state.activities];
    const trace = explain ? { ...state.trace, availability: { rule: `manual status until ${new Date(manual.expiresAt).toISOString()}`, signals: [] } } : NO_TRACE;
    // "Appear offline" says nothing, not even a note.
    const note = manual.availability === 'offline' ? undefined : manual.note;
    return { state: { ...state, availability: manual.availability, activities, note, trace }, validUntil };
  }

  let availability = state.availability;
  let decidedBy: PresenceOverride | undefined;
  const activities = new Set<Activity>(state.activities);
  const sorted = [...live].sort((a, b) => (a.source < b.source ? -1 : 1));
  for (const session of sorted) {
    for (const activity of session.activities) activities.add(activity);
    if (significance[session.availability] > significance[availability]) {
      availability = session.availability;
      decidedBy = session;
    }
  }
  const trace = decidedBy && explain ? { ...state.trace, availability: { rule: `app ${decidedBy.source} until ${new Date(decidedBy.expiresAt).toISOString()}`, signals: [] } } : state.trace;
  // A note from a session or publication: the one that decided the availability, else the first by source.
  const note = decidedBy?.note ?? sorted.find((o) => o.note !== undefined)?.note;
  return {
    state: { ...state, availability, activities: activityOrder.filter((a) => activities.has(a)), ...(note === undefined ? {} : { note }), trace },
    validUntil,
  };
}
