import { z } from 'zod';
import { activitySchema, availabilitySchema, type Activity, type PresenceState } from '../core/presence.js';
import type { Decision } from './evaluate-consent.js';

/**
 * What a watcher is shown: the only input the renderers get. Every field is
 * optional and present only when a rule granted it (privacy invariant 2).
 * It carries no timestamps: a device reporting the same state again must not
 * change what a watcher sees (a change they cannot see leaves no trace).
 */
export const watcherViewSchema = z
  .object({
    entity: z.string(),
    /** RFC 3863 §4.1.4 basic status of the person's presence. */
    basic: z.enum(['open', 'closed']),
    availability: availabilitySchema.optional(),
    activities: z.array(activitySchema).optional(),
  })
  .strict();
export type WatcherView = z.infer<typeof watcherViewSchema>;

/**
 * The one view shown for an owner who is offline, and shown identically for
 * polite-block, block and no matching rule (privacy invariant 1): no time, no
 * device, nothing that differs from a real offline owner.
 */
export function offlineView(entity: string): WatcherView {
  return { entity, basic: 'closed', availability: 'offline' };
}

/**
 * Activities implied by the owner's place (travel, meal, working) reveal the
 * place type or sphere, which no rule can grant yet: they never leave for a
 * watcher until place permissions exist (RFC 5025 provide-place-type).
 */
const PLACE_IMPLIED: ReadonlySet<Activity> = new Set<Activity>(['travel', 'meal', 'working']);

export function buildWatcherView(entity: string, state: PresenceState, decision: Decision): WatcherView {
  if (decision.kind !== 'allow' || state.availability === 'offline') return offlineView(entity);
  const { grant } = decision;
  const activities = state.activities.filter((a) => !PLACE_IMPLIED.has(a));
  if (grant.availability) {
    const view: WatcherView = { entity, basic: 'open', availability: state.availability };
    if (grant.activities) view.activities = activities;
    return view;
  }
  // Activities without availability: with no activity to show, the watcher
  // sees what they would see of an offline owner. Whether the owner is
  // online (the basic status) is availability, which this grant lacks; an
  // activity shown implies it anyway.
  if (grant.activities && activities.length > 0) return { entity, basic: 'open', activities };
  return offlineView(entity);
}
