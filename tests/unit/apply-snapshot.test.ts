import { pino } from 'pino';
import t from 'tap';
import { applySnapshot } from '../../bin/apply-snapshot.js';
import type { Snapshot } from '../../core/db/repository.js';
import { Directory } from '../../core/directory.js';
import { PresenceHub } from '../../core/presence-hub.js';
import { RuleBook } from '../../policy/rule-book.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const OWNER = '0f0f0f0f-0000-4000-8000-000000000001';
const PHONE = '11111111-1111-4111-8111-111111111111';
const iso = (ms: number) => new Date(ms).toISOString();
const log = pino({ level: 'silent' });

/** The owner's records as storage holds them, with these settings. */
const snapshotWith = (settings: unknown): Snapshot => ({
  owners: [{ id: OWNER, handle: 'alice', settings, tokensNotBefore: null }],
  devices: [{ id: PHONE, ownerId: OWNER, deviceClass: 'phone', revoked: false }],
  watchers: [],
  rules: [],
  groups: [],
  states: [],
  overrides: [],
  skippedSignals: 0,
});

/** As bin/service.ts wires them; the owner known from the start-up snapshot, on a call, read, then active while nobody watched (its held state out of date), then watched. */
function setUp() {
  const directory = new Directory();
  const ruleBook = new RuleBook();
  const hub = new PresenceHub({ offlineAfterMs: 600_000 }, (ownerId) => directory.settings(ownerId));
  applySnapshot(snapshotWith({}), directory, ruleBook, hub, NOW, log, undefined);
  hub.apply(OWNER, PHONE, [{ kind: 'call', at: iso(NOW), state: 'in-call' }], NOW);
  hub.current(OWNER, NOW);
  hub.apply(OWNER, PHONE, [{ kind: 'user-input', at: iso(NOW + 1), state: 'active' }], NOW + 1);
  const told: string[] = [];
  hub.watch(OWNER, (state) => told.push(state.activities.join(',')));
  return { directory, ruleBook, hub, told };
}

t.test('settings changed through another process: a hub watcher that came while the state was out of date, and has not read since, is told (the change is compared with the state before the reload)', async (t) => {
  const { directory, ruleBook, hub, told } = setUp();
  applySnapshot(snapshotWith({ ignore: ['call'] }), directory, ruleBook, hub, NOW + 2, log, OWNER);
  t.same(directory.settings(OWNER).ignore, ['call'], 'the new settings are in');
  t.same(told, [''], 'told the call no longer shows');
  t.same(hub.current(OWNER, NOW + 2).activities, []);
});

t.test('a reload that changes nothing the state depends on tells nobody', async (t) => {
  const { directory, ruleBook, hub, told } = setUp();
  applySnapshot(snapshotWith({}), directory, ruleBook, hub, NOW + 2, log, OWNER);
  t.same(told, []);
  t.same(hub.current(OWNER, NOW + 2).activities, ['on-the-phone']);
});
