import type { AccessLogBuffer, AccessRecord } from '../core/access-log.js';
import type { Directory, OwnerRecord } from '../core/directory.js';
import type { PresenceHub } from '../core/presence-hub.js';
import { OFFLINE_STATE, type PresenceState } from '../core/presence.js';
import { evaluateConsent, type Decision } from '../policy/evaluate-consent.js';
import type { DeviceRefs } from '../policy/device-refs.js';
import type { RuleBook } from '../policy/rule-book.js';
import { transformationsSchema } from '../policy/rule.js';
import { buildWatcherView, viewFields, type WatcherView } from '../policy/watcher-view.js';
import { deepFreeze } from '../core/deep-freeze.js';

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
  /** The keyed ids views show devices by (policy/device-refs.ts). */
  readonly deviceRefs: DeviceRefs;
}

/** Who is looking: a watcher (consent applies), or the owner themself (everything). */
export type Viewer = { readonly kind: 'watcher'; readonly id: string } | { readonly kind: 'owner' };

const EVERYTHING = Object.freeze(transformationsSchema.parse({
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
}));
const OWNER_SELF: Decision = { kind: 'allow', grant: EVERYTHING, provenance: {}, ruleIds: [], validUntil: Infinity };

export interface ComputedView {
  readonly owner: OwnerRecord | undefined;
  readonly decision: Decision;
  readonly view: WatcherView;
  /** The view's fields for the access log (viewFields), worked out once per memoized view: every event and read records them. */
  readonly fields: readonly string[];
  /** When the view may change with no new event: the state's or a rule's time condition. */
  readonly validUntil: number;
}

/**
 * Views are built once per (grant, state) and reused, so that thousands of
 * streams fanned out from one change, or a watcher polling, share a handful
 * of view objects, and the representation cache can find their bytes by
 * identity instead of serializing each view to look them up. The view is a
 * pure function of the decision's grant (or that it grants nothing), the
 * state, the entity, the idle threshold and the device classes it asked
 * for; the state object is replaced whenever it changes (core/presence-hub:
 * "its identity is a cheap did-anything-change key"), and a grant object
 * belongs to a frozen rule that is replaced whole, so a memo
 * keyed by both is reused only while the entity, threshold and every device
 * class asked for are still what they were. Memoized views are frozen: a
 * view handed to one watcher can then never be changed under another.
 *
 * One memo per grant object, for the last state asked about: watchers ask
 * about an owner's current state, so older states are never asked for
 * again. They were kept in a WeakMap keyed by the state, and that cost the
 * latency p99: an entry per state change in a long-lived table whose keys
 * die young made V8 promote about 290 KB per scavenge at 5,500 events/s
 * (measured with --trace-gc-nvp; 0.2 KB with one slot per grant), so the
 * old generation filled with dead views and was mark-compacted every ten
 * seconds or so (README, Performance). A grant object belongs to one
 * owner's rule; the few shared by every owner (the owner's own EVERYTHING,
 * a rule's default NOTHING, SHOWS_NOTHING) hold the last owner asked
 * about, and another owner's view is built afresh (a few microseconds:
 * its bytes are still found by content in the representation cache).
 */
interface ViewMemo {
  readonly state: PresenceState;
  readonly entity: string;
  readonly idleThresholdSeconds: number;
  /** The device classes the view was built with, by device id. */
  readonly classes: readonly (readonly [string, string | undefined])[];
  readonly view: WatcherView;
  readonly fields: readonly string[];
}
/** The memo key of every decision that shows nothing (they all give the offline view). */
const SHOWS_NOTHING = Object.freeze({});
const viewMemos = new WeakMap<object, ViewMemo>();

function viewFor(deps: WatcherViewDeps, owner: OwnerRecord | undefined, state: PresenceState, decision: Decision, handle: string): { view: WatcherView; fields: readonly string[] } {
  const entity = deps.entityOf(handle);
  const idleThresholdSeconds = owner ? deps.directory.settings(owner.id).idleAfterSeconds : 0;
  const key: object = decision.kind === 'allow' ? decision.grant : SHOWS_NOTHING;
  // Rule-book grants are frozen (policy/rule-book.ts, evaluateConsent's combined grants); any other is built afresh.
  const memoizable = Object.isFrozen(key);
  const memo = memoizable ? viewMemos.get(key) : undefined;
  if (
    memo &&
    memo.state === state &&
    memo.entity === entity &&
    memo.idleThresholdSeconds === idleThresholdSeconds &&
    memo.classes.every(([id, deviceClass]) => deps.directory.deviceClass(id) === deviceClass)
  ) {
    return memo;
  }
  const classes: (readonly [string, string | undefined])[] = [];
  const view = buildWatcherView(state, decision, {
    entity,
    deviceClass: (id) => {
      const deviceClass = deps.directory.deviceClass(id);
      classes.push([id, deviceClass]);
      return deviceClass;
    },
    idleThresholdSeconds,
    // EVERYTHING is the owner's own grant alone, and memos are kept per grant object.
    showsClass: decision.kind === 'allow' && decision.grant === EVERYTHING,
    deviceRefs: deps.deviceRefs,
  });
  const fields = Object.freeze(viewFields(view));
  if (!memoizable) return { view, fields };
  const made = { state, entity, idleThresholdSeconds, classes, view: deepFreeze(view), fields };
  viewMemos.set(key, made);
  return made;
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
  const { view, fields } = viewFor(deps, owner, state, decision, handle);
  // A location's PIDF-LO retention-expiry is dated by the UTC day: re-render at midnight.
  const midnight = view.location ? now - (now % 86_400_000) + 86_400_000 : Infinity;
  const validUntil = Math.min(decision.validUntil, owner ? deps.hub.validUntil(owner.id, now) : Infinity, midnight);
  return { owner, decision, view, fields, validUntil };
}

const NO_FIELDS: readonly string[] = Object.freeze([]);

/** Privacy invariant 6, on the granted and the withheld path alike (so timing does not tell them apart). */
export function recordAccess(accessLog: AccessLogBuffer, watcherId: string, access: ComputedView, action: AccessRecord['action'], now: number): void {
  if (!access.owner) return;
  const shown = access.decision.kind === 'allow';
  accessLog.record({ ownerId: access.owner.id, watcherId, action, outcome: shown ? 'shown' : 'withheld', fields: shown ? access.fields : NO_FIELDS }, now);
}
