import type { AccessLogBuffer, AccessRecord } from '../core/access-log.js';
import type { Directory, OwnerRecord } from '../core/directory.js';
import type { PresenceHub } from '../core/presence-hub.js';
import { OFFLINE_STATE, type PresenceState } from '../core/presence.js';
import { evaluateConsent, type Decision } from '../policy/evaluate-consent.js';
import type { RuleBook } from '../policy/rule-book.js';
import { transformationsSchema } from '../policy/rule.js';
import { buildWatcherView, viewFields, type WatcherView } from '../policy/watcher-view.js';

/**
 * The one computation behind every output a watcher gets (reads, streams,
 * the owner's preview, and later webhooks and SIP): the owner's current
 * state, the watcher's consent decision, and the view cut from them.
 * Unknown owners take the same path as known ones (privacy invariant 1).
 */
export interface WatcherViewDeps {
  readonly directory: Directory;
  readonly ruleBook: RuleBook;
  readonly hub: PresenceHub;
  readonly entityOf: (handle: string) => string;
}

/** Who is looking: a watcher (consent applies), or the owner themself (everything). */
export type Viewer = { readonly kind: 'watcher'; readonly id: string } | { readonly kind: 'owner' };

const EVERYTHING = transformationsSchema.parse({
  availability: true,
  activities: true,
  place: 'zone',
  sphere: true,
  location: 'exact',
  userInput: 'full',
  devices: 'all',
  services: 'all',
  note: true,
  timeOffset: true,
});
const OWNER_SELF: Decision = { kind: 'allow', grant: EVERYTHING, provenance: {}, ruleIds: [], validUntil: Infinity };

export interface ComputedView {
  readonly owner: OwnerRecord | undefined;
  readonly decision: Decision;
  readonly view: WatcherView;
  /** When the view may change with no new event: the state's or a rule's time condition. */
  readonly validUntil: number;
}

export function computeView(deps: WatcherViewDeps, viewer: Viewer, handle: string, now: number): ComputedView {
  const owner = deps.directory.ownerByHandle(handle);
  const state: PresenceState = owner ? deps.hub.current(owner.id, now) : OFFLINE_STATE;
  let decision: Decision;
  if (viewer.kind === 'owner') decision = OWNER_SELF;
  else if (!owner) decision = { kind: 'no-match', ruleIds: [], validUntil: Infinity };
  else {
    const watcher = deps.directory.activeWatcher(viewer.id);
    // A revoked or unknown watcher matches no rule, not even "any authenticated".
    if (!watcher) decision = { kind: 'no-match', ruleIds: [], validUntil: Infinity };
    else decision = evaluateConsent(deps.ruleBook.policy(owner.id), { id: viewer.id, domain: watcher?.domain }, { now, sphere: state.place?.sphere, zone: state.place?.zone });
  }
  const view = buildWatcherView(state, decision, {
    entity: deps.entityOf(handle),
    deviceClass: (id) => deps.directory.device(id)?.deviceClass,
    idleThresholdSeconds: owner ? deps.directory.settings(owner.id).idleAfterSeconds : 0,
  });
  // A location's PIDF-LO retention-expiry is dated by the UTC day: re-render at midnight.
  const midnight = view.location ? now - (now % 86_400_000) + 86_400_000 : Infinity;
  const validUntil = Math.min(decision.validUntil, owner ? deps.hub.validUntil(owner.id) : Infinity, midnight);
  return { owner, decision, view, validUntil };
}

/** Privacy invariant 6, on the granted and the withheld path alike (so timing does not tell them apart). */
export function recordAccess(accessLog: AccessLogBuffer, watcherId: string, access: ComputedView, action: AccessRecord['action'], now: number): void {
  if (!access.owner) return;
  const shown = access.decision.kind === 'allow';
  accessLog.record({ ownerId: access.owner.id, watcherId, action, outcome: shown ? 'shown' : 'withheld', fields: shown ? viewFields(access.view) : [] }, now);
}
