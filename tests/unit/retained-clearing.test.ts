import t from 'tap';
import { RetainedClearing } from '../../ingest/retained-clearing.js';

const A = '11111111-1111-4111-8111-111111111111';
const B = '22222222-2222-4222-8222-222222222222';
const C = '33333333-3333-4333-8333-333333333333';
const topics = { root: 'p', ownTracksRoot: 'ot' };
const payload = Buffer.from('{"kind":"call"}');

function setup(maxRemembered?: number) {
  const cleared: string[] = [];
  const clearing = new RetainedClearing({ topics, publish: (topic) => cleared.push(topic), ...(maxRemembered === undefined ? {} : { maxRemembered }) });
  return { cleared, clearing };
}

t.test('what is cleared, message by message', async (t) => {
  const { cleared, clearing } = setup();
  const steps: [string, Buffer, boolean, boolean, string][] = [
    [`p/${A}/events`, payload, false, false, 'a native live message, its topic not known retained: left alone'],
    [`p/${A}/events`, payload, true, true, 'flagged retained (sent because of a subscription): cleared'],
    [`p/${A}/events`, payload, false, true, 'the same topic, live: its device retains, so cleared too'],
    [`p/${B}/events`, payload, false, false, 'another native topic: not known retained'],
    [`p/${A}/events`, Buffer.alloc(0), true, false, 'a zero-byte message is a clear itself (perhaps our own): never answered'],
    [`ot/${C}/phone`, payload, false, true, "an OwnTracks report on the device's base topic: the app retains locations"],
    [`ot/${C}/phone/event`, payload, false, false, 'an OwnTracks transition, live: not retained by the app'],
    [`ot/${C}/phone/event`, payload, true, true, 'unless it arrives flagged'],
    [`q/${A}/events`, payload, true, false, 'not a device topic: never touched'],
    [`p/not-a-device/events`, payload, true, false, 'a malformed device id: never touched'],
    ['$SYS/broker/uptime', payload, true, false, "the broker's own topics: never touched"],
  ];
  for (const [topic, body, retained, expected, why] of steps) {
    const before = cleared.length;
    t.equal(clearing.observe(topic, body, retained), expected, why);
    t.same(cleared.slice(before), expected ? [topic] : [], `${why}: published`);
  }
  t.equal(clearing.remembered, 2);
});

t.test('remembers a bounded number of retaining topics, the least recently seen retained forgotten first', async (t) => {
  const { cleared, clearing } = setup(2);
  clearing.observe(`p/${A}/events`, payload, true);
  clearing.observe(`p/${B}/events`, payload, true);
  clearing.observe(`p/${A}/events`, payload, true); // A seen again: now the newest
  clearing.observe(`p/${C}/events`, payload, true); // B, the oldest, goes
  t.equal(clearing.remembered, 2);
  cleared.length = 0;
  for (const id of [A, B, C]) clearing.observe(`p/${id}/events`, payload, false);
  t.same(cleared, [`p/${A}/events`, `p/${C}/events`]);
});

t.test('a clear that does not come back through the subscription is reported by the sweep', async (t) => {
  let now = 1_000;
  const cleared: string[] = [];
  const clearing = new RetainedClearing({ topics, publish: (topic) => cleared.push(topic), confirm: { clock: () => now, afterMs: 30_000 } });
  clearing.observe(`ot/${A}/phone`, payload, false);
  clearing.observe(`ot/${B}/phone`, payload, false);
  now += 10_000;
  clearing.observe(`ot/${C}/phone`, payload, false);
  clearing.observe(`ot/${A}/phone`, Buffer.alloc(0), false); // A's clear is back
  t.equal(clearing.sweep(), 0, 'none overdue yet');
  now += 20_000;
  t.equal(clearing.sweep(), 1, "B's is overdue (30 s), C's not yet");
  t.equal(clearing.sweep(), 0, 'reported once');
  now += 10_000;
  t.equal(clearing.sweep(), 1, "then C's");
  t.same(cleared, [`ot/${A}/phone`, `ot/${B}/phone`, `ot/${C}/phone`]);
});

t.test('without confirm the sweep reports nothing', async (t) => {
  const { clearing } = setup();
  clearing.observe(`ot/${A}/phone`, payload, false);
  t.equal(clearing.sweep(), 0);
});

t.test('with confirmation, one clear in flight per topic; what came meanwhile gets one more when it is back (or at its sweep)', async (t) => {
  let now = 1_000;
  const cleared: string[] = [];
  const clearing = new RetainedClearing({ topics, publish: (topic) => cleared.push(topic), confirm: { clock: () => now, afterMs: 30_000 } });
  const topic = `ot/${A}/phone`;
  const echo = (of: string) => clearing.observe(of, Buffer.alloc(0), false);
  t.equal(clearing.observe(topic, payload, false), true, 'cleared');
  for (let i = 0; i < 5; i++) t.equal(clearing.observe(topic, payload, false), false, 'a flood meanwhile: no clear each');
  t.equal(clearing.observe(`ot/${B}/phone`, payload, false), true, 'another topic is not held up');
  t.equal(echo(topic), true, 'back: one more clear for what came meanwhile (the broker may have taken it after the first)');
  t.equal(echo(topic), false, 'that one back, nothing came meanwhile: nothing more');
  t.equal(echo(topic), false, 'a zero-byte message not ours: nothing');
  t.equal(clearing.observe(topic, payload, false), true, 'the next message is cleared at once');
  now += 30_000;
  t.equal(clearing.sweep(), 2, 'two clears overdue (B and the last), neither with messages since');
  t.same(cleared, [topic, `ot/${B}/phone`, topic, topic]);
  cleared.length = 0;
  const c = `ot/${C}/phone`;
  clearing.observe(c, payload, false);
  clearing.observe(c, payload, false);
  now += 30_000;
  t.equal(clearing.sweep(), 1, 'overdue');
  t.same(cleared, [c, c], 'and cleared once more, for the message that came meanwhile');
});
