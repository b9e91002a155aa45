import type { Logger } from 'pino';
import type { Snapshot } from '../core/db/repository.js';
import type { Directory } from '../core/directory.js';
import { ownerSettingsSchema } from '../core/owner-settings.js';
import type { PresenceHub } from '../core/presence-hub.js';
import type { PresenceOverride } from '../core/presence-overrides.js';
import type { RuleBook } from '../policy/rule-book.js';
import { groupSchema, ruleBodySchema, type Group } from '../policy/rule.js';

/** A stored watcher in the directory (its token cut-off too); kinds this version does not know are left out. */
export function putWatcher(directory: Directory, watcher: Snapshot['watchers'][number]) {
  const { tokensNotBefore, ...record } = watcher;
  if (record.kind === 'person' || record.kind === 'app') directory.putWatcher({ ...record, kind: record.kind, domain: record.domain ?? undefined });
  directory.setTokenCutoff(record.id, tokensNotBefore?.getTime());
}

/**
 * Puts stored records in memory: the whole snapshot at start, or one
 * owner's records (`reloaded`) after another process changed them, where an
 * owner with no rules, groups or statuses left gets empty ones.
 *
 * A reloaded owner's watchers are told of the change against the state
 * taken before any of it applies (PresenceHub.beforeChange): the settings
 * go in first, and the overrides, which tell the watchers, last; without
 * it, a state left out of date while nobody watched would be brought up to
 * date with the new settings already in, and a hub watcher that had not
 * read since would not hear that, say, calls no longer show. (Today's
 * subscribers, streams, webhooks, SIP and arrivals, read as they
 * subscribe, which brings the state up to date first: this is defence in
 * depth.) A one-owner snapshot carries no states (Repository.loadSnapshot):
 * hub.restore below would replace the entry and the baseline with it.
 */
export function applySnapshot(snapshot: Snapshot, directory: Directory, ruleBook: RuleBook, hub: PresenceHub, now: number, log: Logger, reloaded: string | undefined) {
  if (reloaded !== undefined) hub.beforeChange(reloaded, now);
  let skippedSettings = 0;
  for (const owner of snapshot.owners) {
    directory.putOwner({ id: owner.id, handle: owner.handle });
    directory.setTokenCutoff(owner.id, owner.tokensNotBefore?.getTime());
    const settings = ownerSettingsSchema.safeParse(owner.settings);
    if (settings.success) directory.putSettings(owner.id, settings.data);
    else skippedSettings += 1; // the defaults apply
  }
  for (const device of snapshot.devices) directory.putDevice(device);
  for (const watcher of snapshot.watchers) putWatcher(directory, watcher);
  const groupsByOwner = new Map<string, Group[]>(reloaded ? [[reloaded, []]] : []);
  let skippedGroups = 0;
  for (const stored of snapshot.groups) {
    const parsed = groupSchema.safeParse({ id: stored.id, name: stored.name, members: stored.members });
    if (!parsed.success) {
      skippedGroups += 1; // a group that no longer validates matches nobody (default deny)
      continue;
    }
    groupsByOwner.set(stored.ownerId, [...(groupsByOwner.get(stored.ownerId) ?? []), parsed.data]);
  }
  // Keyed by the directory's copy of each owner id: one string per owner in memory, not one per structure.
  for (const [ownerId, groups] of groupsByOwner) ruleBook.replaceGroups(directory.ownerId(ownerId), groups);
  const rulesByOwner = new Map<string, { id: string; body: unknown; arrivedAt: Date | null }[]>(reloaded ? [[reloaded, []]] : []);
  for (const rule of snapshot.rules) {
    const list = rulesByOwner.get(rule.ownerId) ?? [];
    list.push(rule);
    rulesByOwner.set(rule.ownerId, list);
  }
  let skippedRules = 0;
  for (const [ownerId, stored] of rulesByOwner) {
    const rules = [];
    for (const { id, body, arrivedAt } of stored) {
      const parsed = ruleBodySchema.safeParse(body);
      if (parsed.success) rules.push({ ...parsed.data, id, ...(arrivedAt ? { arrivedAt: arrivedAt.toISOString() } : {}) });
      else skippedRules += 1;
    }
    ruleBook.replace(directory.ownerId(ownerId), rules);
  }
  for (const state of snapshot.states) hub.restore(directory.ownerId(state.ownerId), state.version, state.signals, now);
  const overridesByOwner = new Map<string, PresenceOverride[]>(reloaded ? [[reloaded, []]] : []);
  for (const { ownerId, override } of snapshot.overrides) overridesByOwner.set(ownerId, [...(overridesByOwner.get(ownerId) ?? []), override]);
  // A reload keeps what this process changed while it was being queried (PresenceHub.finishOverridesReload).
  for (const [ownerId, overrides] of overridesByOwner) hub.finishOverridesReload(directory.ownerId(ownerId), overrides, now);
  if (skippedRules > 0 || snapshot.skippedSignals > 0 || skippedSettings > 0 || skippedGroups > 0) {
    // A rule that no longer validates grants nothing (default deny).
    log.warn({ skippedRules, skippedGroups, skippedSignals: snapshot.skippedSignals, skippedSettings }, 'stored rows failed validation and were skipped');
  }
}
