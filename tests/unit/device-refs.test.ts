import { createHash } from 'node:crypto';
import t from 'tap';
import { DeviceRefs } from '../../policy/device-refs.js';
import { transformationsSchema, type Transformations } from '../../policy/rule.js';

const grant = (devices: Transformations['devices'], services: Transformations['services'] = []): Transformations =>
  Object.freeze(transformationsSchema.parse({ devices, services }));
const KEY = Buffer.alloc(32, 1);
const DEVICE = '11111111-1111-4111-8111-111111111111';

t.test('the ids are well formed: an xs:ID occurrence and an RFC 9562 version 8 urn:uuid (RFC 4479 §11.1.3)', async (t) => {
  const ref = new DeviceRefs(KEY).of(grant('all'), DEVICE);
  t.match(ref.occurrence, /^d[0-9a-f]{12}$/);
  t.match(ref.urn, /^urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  t.notOk(ref.urn.includes(ref.occurrence.slice(1)), 'the occurrence id is not a piece of the URN');
});

t.test('keyed: nobody without the key computes them from a device id', async (t) => {
  const ref = new DeviceRefs(KEY).of(grant('all'), DEVICE);
  const other = new DeviceRefs(Buffer.alloc(32, 2)).of(grant('all'), DEVICE);
  t.not(other.urn, ref.urn, 'another key, other ids');
  t.not(other.occurrence, ref.occurrence);
  // What the ids were before they were keyed: a plain digest of the id, which anyone knowing the id could compute.
  const unkeyed = createHash('sha256').update(`presence-device:${DEVICE}`).digest('hex');
  t.notOk(ref.urn.replaceAll('-', '').includes(unkeyed.slice(0, 8)), 'not the unkeyed digest');
  t.throws(() => new DeviceRefs(Buffer.alloc(16)), RangeError, 'a short key is refused');
});

t.test('stable for a device grant, unrelated across device grants', async (t) => {
  const refs = new DeviceRefs(KEY);
  const all = refs.of(grant('all'), DEVICE);
  t.same(new DeviceRefs(KEY).of(grant('all'), DEVICE), all, 'the same in another process with the same key');
  t.same(refs.of(Object.freeze(transformationsSchema.parse({ devices: 'all', location: 'exact', note: true })), DEVICE), all, 'whatever else the grant shows');
  t.same(refs.of(grant(['watch', 'phone']), DEVICE), refs.of(grant(['phone', 'watch', 'phone']), DEVICE), 'a class set is a set');
  t.same(refs.of(transformationsSchema.parse({ devices: 'all' }), DEVICE), all, 'an unfrozen grant too');
  const seen = new Set([all.urn]);
  for (const g of [grant(['phone']), grant(['phone', 'watch']), grant([], 'all'), grant([], ['phone']), grant('all', 'all')]) {
    const ref = refs.of(g, DEVICE);
    t.notOk(seen.has(ref.urn), `${JSON.stringify([g.devices, g.services])}: ids of its own`);
    seen.add(ref.urn);
  }
  t.not(refs.of(grant('all'), '22222222-2222-4222-8222-222222222222').urn, all.urn, 'another device, another id');
});

t.test('DeviceRefs.derivedFrom: a key of its own from another secret', async (t) => {
  const derived = DeviceRefs.derivedFrom(KEY).of(grant('all'), DEVICE);
  t.same(DeviceRefs.derivedFrom(Buffer.from(KEY)).of(grant('all'), DEVICE), derived, 'deterministic');
  t.not(derived.urn, new DeviceRefs(KEY).of(grant('all'), DEVICE).urn, 'not the secret itself');
});
