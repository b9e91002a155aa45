import t from 'tap';
import { KeySet, type StoredPublicKey } from '../../core/identity/key-set.js';
import { generateSigningKeyPem, publicJwkOf, signingKeyFromPem } from '../../core/identity/signing-key.js';

/** The verification key set: current key, stored earlier keys, reloads on an unknown kid (throttled), retirement. */
const current = await signingKeyFromPem(await generateSigningKeyPem());
const older = await signingKeyFromPem(await generateSigningKeyPem());
const newer = await signingKeyFromPem(await generateSigningKeyPem());

t.test('stored keys verify; an unknown kid reloads at most once a second; junk rows are ignored', async (t) => {
  let stored: StoredPublicKey[] = [{ kid: older.kid, publicJwk: await publicJwkOf(older) }, { kid: 'junk', publicJwk: { kty: 'RSA', n: 'x' } }];
  let loads = 0;
  const keys = new KeySet(current, await publicJwkOf(current), async () => {
    loads += 1;
    return stored;
  });
  t.ok(await keys.keyFor(current.kid, 0), 'the signing key, without loading anything');
  t.equal(loads, 0);
  await keys.reload();
  t.ok(await keys.keyFor(older.kid, 0));
  t.equal(await keys.keyFor('junk', 0), undefined, 'a row that is no P-256 key verifies nothing');
  t.same(
    keys.published().map((k) => k.kid),
    [current.kid, older.kid],
  );
  stored = [...stored, { kid: newer.kid, publicJwk: await publicJwkOf(newer) }];
  const loadsBefore = loads;
  t.ok(await keys.keyFor(newer.kid, 5000), 'a new kid reloads');
  t.equal(await keys.keyFor('forged-1', 5500), undefined);
  t.equal(await keys.keyFor('forged-2', 5600), undefined);
  t.equal(loads, loadsBefore + 1, 'forged kids within a second of a reload load nothing');
  t.equal(await keys.keyFor(undefined, 9000), undefined, 'no kid, no key');
});

t.test('a key that disappears (retired) is dropped and the listeners are told', async (t) => {
  let stored: StoredPublicKey[] = [{ kid: older.kid, publicJwk: await publicJwkOf(older) }];
  const keys = new KeySet(current, await publicJwkOf(current), async () => stored);
  let told = 0;
  keys.onRetired(() => (told += 1));
  await keys.reload();
  t.equal(told, 0);
  stored = [];
  await keys.reload();
  t.equal(told, 1);
  t.equal(await keys.keyFor(older.kid, 0), undefined);
  t.ok(await keys.keyFor(current.kid, 0), 'the signing key stays whatever storage says');
});
