import t from 'tap';
import { ownerSettingsSchema, type OwnerSettings } from '../../core/owner-settings.js';
import { PresenceHub } from '../../core/presence-hub.js';
import type { PresenceState } from '../../core/presence.js';
import type { SensorEvent } from '../../core/events.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const OWNER = 'o1';
const PHONE = '11111111-1111-4111-8111-111111111111';
const iso = (ms: number) => new Date(ms).toISOString();

t.test('applies events, emits a change only when presence changes, re-derives when it stops holding', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  const changes: PresenceState[] = [];
  hub.watch(OWNER, (state) => changes.push(state));

  t.equal(hub.current(OWNER, NOW).availability, 'offline', 'never heard from');
  t.ok(hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW), state: 'in-call' }], NOW));
  t.equal(changes.length, 1);
  t.same(hub.current(OWNER, NOW).activities, ['on-the-phone']);

  t.notOk(hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW), state: 'in-call' }], NOW), 'a duplicate changes nothing');
  t.notOk(hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW - 1000), state: 'idle' }], NOW), 'a late event changes nothing');
  t.equal(changes.length, 1);

  const state = hub.current(OWNER, NOW + 59_999);
  t.equal(state.availability, 'busy', 'still busy just before the silence limit');
  t.equal(hub.current(OWNER, NOW + 59_999), state, 'same object while nothing changed');
  t.equal(hub.current(OWNER, NOW + 60_000).availability, 'offline', 'silent for the limit -> offline, on read');
  t.equal(changes.length, 2, 'and the change is announced');
});

t.test('hands over changed owners once, coalesced, and takes them back after a failed write', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  for (let i = 0; i < 5; i++) hub.apply(OWNER, PHONE, [{ kind: 'user-input', at: iso(NOW + i), state: i % 2 ? 'active' : 'idle' }], NOW + i);
  hub.apply('o2', PHONE, [{ kind: 'call', at: iso(NOW), state: 'idle' }], NOW);
  const dirty = hub.takeDirty();
  t.same(
    dirty.map((d) => [d.ownerId, d.version, d.signals.length]),
    [
      [OWNER, 5, 1],
      ['o2', 1, 1],
    ],
  );
  t.same(hub.takeDirty(), [], 'nothing twice');
  hub.markDirty([OWNER]);
  t.equal(hub.takeDirty().length, 1);
});

t.test('restores persisted signals without announcing a change', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  let changes = 0;
  hub.watch(OWNER, () => changes++);
  hub.restore(OWNER, 7, [{ deviceId: PHONE, event: { kind: 'call', at: iso(NOW), state: 'in-call' } }], NOW + 1000);
  t.same(hub.current(OWNER, NOW + 1000).activities, ['on-the-phone']);
  t.equal(changes, 0);
  t.equal(hub.dirtyCount, 0);
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW + 2000), state: 'idle' }], NOW + 2000);
  t.equal(hub.takeDirty()[0]?.version, 8, 'versions continue from the stored one');
});

t.test('the held state carries no trace; explain() works it out on demand, and equal activity lists are shared', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW), state: 'in-call' }], NOW);
  hub.apply('o2', PHONE, [{ kind: 'call', at: iso(NOW), state: 'in-call' }], NOW);
  const held = hub.current(OWNER, NOW);
  t.same(held.trace, {}, 'nothing held per owner for the trace');
  const explained = hub.explain(OWNER, NOW);
  t.match(explained.trace, { availability: { rule: String, signals: Array }, 'activity:on-the-phone': { signals: [`${PHONE}/call`] } });
  t.same({ ...explained, trace: {} }, held, 'the same presence, with its reasons');
  t.equal(hub.current('o2', NOW).activities, held.activities, 'one list object for both owners');
  t.ok(Object.isFrozen(held.activities));
  t.equal(hub.explain('nobody', NOW).availability, 'offline');
});

t.test('forgetting silent devices: written again, presence unchanged but for the device list', async (t) => {
  const WATCH = '22222222-2222-4222-8222-222222222222';
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  hub.apply(OWNER, PHONE, [{ kind: 'calendar', at: iso(NOW), state: 'busy', start: iso(NOW), end: iso(NOW + 14 * 86_400_000) }], NOW);
  hub.apply(OWNER, WATCH, [{ kind: 'battery', at: iso(NOW), level: 80, charging: false }], NOW);
  hub.takeDirty();
  const later = NOW + 3_600_000;
  // The phone keeps reporting (its old calendar entry still counts); the watch has been silent for an hour.
  hub.apply(OWNER, PHONE, [{ kind: 'user-input', at: iso(later), state: 'active' }], later);
  hub.takeDirty();
  const state = hub.current(OWNER, later);
  t.same(state.activities, ['meeting'], 'the old calendar entry counts');
  const changes: PresenceState[] = [];
  hub.watch(OWNER, (s) => changes.push(s));
  t.same(state.devices?.map((d) => [d.id, d.live]), [[PHONE, true], [WATCH, false]]);
  t.equal(await hub.forgetSilent(later - 1_800_000, () => later, 1), 1, 'one owner lost signals');
  t.same(hub.signalsOf(OWNER).map((s) => s.event.kind).sort(), ['calendar', 'user-input'], "the silent watch is forgotten, not the reporting phone's old entry");
  const after = hub.current(OWNER, later);
  t.same({ ...after, devices: undefined }, { ...state, devices: undefined }, 'presence unchanged but for the device list');
  t.same(after.devices?.map((d) => d.id), [PHONE], 'which no longer names the silent watch');
  t.equal(changes.length, 1, 'announced as a change');
  t.same(hub.takeDirty().map((d) => d.signals.length), [2], 'written again without them');
  t.equal(await hub.forgetSilent(later - 1_800_000, () => later), 0, 'a second pass has nothing to do');
});

t.test('an owner nobody watches is derived when read, not on every event: the same state object while the presence is the same', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 600_000 });
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW + 10), state: 'idle' }], NOW + 10);
  const first = hub.current(OWNER, NOW + 10);
  // Battery reports from before the call event change the signals, not the presence (last seen stays).
  for (let i = 1; i <= 3; i++) t.ok(hub.apply(OWNER, PHONE, [{ kind: 'battery', at: iso(NOW + i), level: 50 + i, charging: false }], NOW + 10));
  t.equal(hub.current(OWNER, NOW + 10), first, 'derived again on read, and kept: views memoized on it stay valid');
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW + 14), state: 'in-call' }], NOW + 14);
  const second = hub.current(OWNER, NOW + 14);
  t.not(second, first);
  t.same(second.activities, ['on-the-phone'], 'a change of presence is there when read');
});

/**
 * An owner read once, then changed while nobody watched (its held state
 * out of date), then watched: what the watcher is told, as `show` puts it.
 */
function watchedWhileStale(hub: PresenceHub, owner: string, read: SensorEvent, change: SensorEvent, show: (state: PresenceState) => string): string[] {
  hub.apply(owner, PHONE, [read], Date.parse(read.at));
  hub.current(owner, Date.parse(read.at));
  hub.apply(owner, PHONE, [change], Date.parse(change.at));
  const told: string[] = [];
  hub.watch(owner, (state) => told.push(show(state)));
  return told;
}
const activities = (state: PresenceState) => state.activities.join(',');

t.test('a watcher that arrives while the state is out of date is not told of what changed before it came, and is told of what changes after', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 600_000 });
  const told = watchedWhileStale(hub, OWNER, { kind: 'call', at: iso(NOW), state: 'idle' }, { kind: 'call', at: iso(NOW + 1), state: 'in-call' }, activities);
  t.same(hub.current(OWNER, NOW + 1).activities, ['on-the-phone'], 'read: as it is');
  t.same(told, [], 'not told of the change before it came');
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW + 2), state: 'idle' }], NOW + 2);
  t.same(told, [''], 'told the call ended');

  // Out of date again while unwatched, then watched, then a change: compared with what held just before it.
  const other = 'o2';
  const late = watchedWhileStale(hub, other, { kind: 'call', at: iso(NOW + 10), state: 'idle' }, { kind: 'call', at: iso(NOW + 11), state: 'in-call' }, activities);
  hub.apply(other, PHONE, [{ kind: 'battery', at: iso(NOW + 2), level: 40, charging: false }], NOW + 11);
  t.same(late, [], 'a change that leaves the presence as it was when the watcher came is not announced');
  hub.apply(other, PHONE, [{ kind: 'call', at: iso(NOW + 13), state: 'idle' }], NOW + 13);
  t.same(late, [''], 'one that changes it is');
});

t.test('a watcher that arrives while the state is out of date is told of a manual status set after it came', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 600_000 });
  const told = watchedWhileStale(hub, OWNER, { kind: 'call', at: iso(NOW), state: 'idle' }, { kind: 'user-input', at: iso(NOW + 1), state: 'active' }, (state) => state.availability);
  hub.setOverride(OWNER, { source: 'manual', availability: 'busy', activities: [], expiresAt: NOW + 60_000 }, NOW + 2);
  t.same(told, ['busy'], 'compared with what held before the status was set');
  hub.removeOverride(OWNER, 'manual', NOW + 3);
  t.equal(told.length, 2, 'and told when it is removed');
  t.not(told[1], 'busy');
});

t.test('a settings change is compared with the state before it (beforeChange, then refresh), even while the state is out of date', async (t) => {
  let settings: OwnerSettings = ownerSettingsSchema.parse({});
  const hub = new PresenceHub({ offlineAfterMs: 600_000 }, () => settings);
  const told = watchedWhileStale(hub, OWNER, { kind: 'call', at: iso(NOW), state: 'in-call' }, { kind: 'user-input', at: iso(NOW + 1), state: 'active' }, activities);
  hub.beforeChange(OWNER, NOW + 2);
  settings = ownerSettingsSchema.parse({ ignore: ['call'] });
  hub.refresh(OWNER, NOW + 2);
  t.same(told, [''], 'told the call no longer shows');
});
