import t from 'tap';
import type { Derived } from '../../core/derive-presence.js';
import { NO_TRACE, OFFLINE_STATE, type PresenceState } from '../../core/presence.js';
import { applyOverrides, MANUAL, overrideInputSchema, sessionSource, type PresenceOverride } from '../../core/presence-overrides.js';
import { PresenceHub } from '../../core/presence-hub.js';

const NOW = Date.parse('2026-05-04T10:00:00Z');
const state = (availability: PresenceState['availability'], activities: PresenceState['activities'] = []): Derived => ({
  state: { ...OFFLINE_STATE, availability, activities, lastSeen: NOW, trace: { availability: { rule: 'derived', signals: [] } } },
  validUntil: NOW + 3_600_000,
});
const o = (source: string, availability: PresenceOverride['availability'], activities: PresenceOverride['activities'] = [], expiresIn = 600_000): PresenceOverride => ({
  source,
  availability,
  activities,
  expiresAt: NOW + expiresIn,
});
const shown = (d: Derived) => [d.state.availability, d.state.activities.join(',')];

t.test('the manual status replaces the derived availability until it expires', async (t) => {
  const d = applyOverrides(state('busy', ['meeting']), [o(MANUAL, 'available')], NOW);
  t.same(shown(d), ['available', 'meeting'], 'derived activities kept when the status names none');
  t.equal(d.validUntil, NOW + 600_000, 're-derived when it expires');
  t.match(d.state.trace.availability?.rule, /^manual status until/);
  t.same(shown(applyOverrides(state('available'), [o(MANUAL, 'busy', ['meeting'])], NOW)), ['busy', 'meeting']);
  t.same(shown(applyOverrides(state('busy', ['on-the-phone']), [o(MANUAL, 'offline')], NOW)), ['offline', ''], 'appear offline: nothing shows');
  t.same(shown(applyOverrides(state('offline'), [o(MANUAL, 'available')], NOW)), ['available', ''], 'even with every device silent');
  t.same(shown(applyOverrides(state('busy', ['meeting']), [o(MANUAL, 'available', [], -1)], NOW)), ['busy', 'meeting'], 'expired: gone');
});

t.test('a state derived without its trace gets no trace entry from a status or a session, and the same state otherwise', async (t) => {
  const bare = (d: Derived): Derived => ({ ...d, state: { ...d.state, trace: NO_TRACE } });
  for (const overrides of [[o(MANUAL, 'available')], [o(sessionSource('softphone'), 'busy', ['on-the-phone'])], [o(MANUAL, 'offline')]]) {
    const explained = applyOverrides(state('away', ['meeting']), overrides, NOW);
    const unexplained = applyOverrides(bare(state('away', ['meeting'])), overrides, NOW);
    t.equal(unexplained.state.trace, NO_TRACE, overrides[0]?.source ?? '');
    t.same({ ...unexplained.state, trace: undefined }, { ...explained.state, trace: undefined });
    t.equal(unexplained.validUntil, explained.validUntil);
  }
});

t.test('the manual status beats app sessions', async (t) => {
  t.same(shown(applyOverrides(state('available'), [o(sessionSource('softphone'), 'busy', ['on-the-phone']), o(MANUAL, 'do-not-disturb')], NOW)), ['do-not-disturb', '']);
});

t.test('app sessions combine: the most significant availability wins, activities merge', async (t) => {
  t.same(shown(applyOverrides(state('away'), [o(sessionSource('chat'), 'available')], NOW)), ['available', ''], 'an app in use beats idle');
  t.same(shown(applyOverrides(state('available', ['meeting']), [o(sessionSource('softphone'), 'busy', ['on-the-phone'])], NOW)), ['busy', 'on-the-phone,meeting']);
  t.same(shown(applyOverrides(state('do-not-disturb', ['sleeping']), [o(sessionSource('chat'), 'available')], NOW)), ['do-not-disturb', 'sleeping'], 'asleep is not overruled by an app');
  t.same(shown(applyOverrides(state('offline'), [o(sessionSource('softphone'), 'busy', ['on-the-phone'])], NOW)), ['busy', 'on-the-phone']);
  const two = applyOverrides(state('available'), [o(sessionSource('a'), 'busy', [], 60_000), o(sessionSource('b'), 'away', [], 120_000)], NOW);
  t.equal(two.validUntil, NOW + 60_000, 'the first expiry');
});

t.test('input validation', async (t) => {
  t.notOk(overrideInputSchema.safeParse({ availability: 'busy', expiresInSeconds: 10 }).success, 'at least a minute');
  t.notOk(overrideInputSchema.safeParse({ availability: 'busy', expiresInSeconds: 8 * 86_400 }).success, 'at most a week');
  t.notOk(overrideInputSchema.safeParse({ availability: 'free', expiresInSeconds: 600 }).success);
  t.notOk(overrideInputSchema.safeParse({ availability: 'busy', expiresInSeconds: 600, mood: 'x' }).success, 'no unknown fields');
  t.notOk(overrideInputSchema.safeParse({ availability: 'busy', expiresInSeconds: 600, note: 'a\u0007b' }).success, 'a note is printable text');
  t.ok(overrideInputSchema.safeParse({ availability: 'busy', expiresInSeconds: 600, note: 'Back at 3' }).success, 'a note');
});

t.test('the hub shows a manual status for an owner no device ever reported for, until it expires', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  hub.setOverride('o1', o(MANUAL, 'busy', ['meeting']), NOW);
  t.equal(hub.current('o1', NOW).availability, 'busy');
  t.equal(hub.current('o1', NOW + 600_000).availability, 'offline', 'expired');
  hub.setOverride('o1', o(MANUAL, 'busy'), NOW);
  hub.removeOverride('o1', MANUAL, NOW);
  t.equal(hub.current('o1', NOW).availability, 'offline', 'removed');
});

t.test('a reload of stored overrides keeps what this process changed while it was queried (scale-out control channel)', async (t) => {
  const hub = new PresenceHub({ offlineAfterMs: 60_000 });
  const pub = (source: string, etag: string, availability: PresenceOverride['availability'] = 'busy'): PresenceOverride => ({ ...o(source, availability), etag });
  hub.restoreOverrides('o1', [pub('publication:a', 'a1'), pub('publication:b', 'b1'), pub('publication:c', 'c1')], NOW);

  // The snapshot is queried; meanwhile this process modifies a, removes c and creates d (each stored, then applied).
  hub.beginOverridesReload('o1');
  hub.setOverride('o1', pub('publication:a', 'a2'), NOW);
  hub.removeOverride('o1', 'publication:c', NOW);
  hub.setOverride('o1', pub('publication:d', 'd1', 'do-not-disturb'), NOW);
  // The snapshot predates all three, and carries b as another process changed it.
  hub.finishOverridesReload('o1', [pub('publication:a', 'a1'), pub('publication:b', 'b2'), pub('publication:c', 'c1')], NOW);
  const tags = () => Object.fromEntries(hub.overridesOf('o1').map((x) => [x.source, x.etag]));
  t.same(tags(), { 'publication:b': 'b2', 'publication:a': 'a2', 'publication:d': 'd1' }, "a keeps this process's newer tag, c stays removed, d stays, b comes from storage");
  t.equal(hub.current('o1', NOW).availability, 'do-not-disturb', 'and the state is derived from the merged list');

  // The next reload, with nothing changed here meanwhile, applies storage as it is.
  hub.beginOverridesReload('o1');
  hub.finishOverridesReload('o1', [pub('publication:a', 'a2')], NOW);
  t.same(tags(), { 'publication:a': 'a2' });

  // An abandoned reload leaves nothing behind: a later change is not remembered for a reload that never comes.
  hub.beginOverridesReload('o1');
  hub.abandonOverridesReload('o1');
  hub.setOverride('o1', pub('publication:a', 'a3'), NOW);
  hub.finishOverridesReload('o1', [pub('publication:a', 'a2')], NOW);
  t.same(tags(), { 'publication:a': 'a2' }, 'without a begin, storage as it is (the start-up snapshot)');
});
