import { stat } from 'node:fs/promises';
import t from 'tap';
import { keyFilePath, loadOrCreateKeyPem } from '../../bin/key-file.js';
import { tempDir } from '../helpers/env.js';

t.test('processes starting at once agree on one signing key, stored private', async (t) => {
  const dir = await tempDir(t);
  const results = await Promise.all(Array.from({ length: 8 }, () => loadOrCreateKeyPem(dir)));
  t.equal(new Set(results.map((r) => r.pem)).size, 1, 'one key');
  t.equal(results.filter((r) => r.created).length, 1, 'created once');
  t.equal((await stat(keyFilePath(dir))).mode & 0o777, 0o600);
  t.same(await loadOrCreateKeyPem(dir), { pem: results[0]?.pem, created: false }, 'read back later');
});

t.test('the Wi-Fi digest key: configured, else a file made once from the signing key (digests from before stay valid)', async (t) => {
  const { createHash } = await import('node:crypto');
  const { loadOrCreateDigestKey } = await import('../../bin/key-file.js');
  const dir = await tempDir(t);
  const pem = (await loadOrCreateKeyPem(dir)).pem;
  const before = createHash('sha256').update('presence network digest v1\0').update(pem).digest();
  const first = await loadOrCreateDigestKey(dir, undefined, pem);
  t.same(first, before, 'keyed as digests were keyed before the file existed');
  t.equal((await stat(`${dir}/network-digest.key`)).mode & 0o777, 0o600);
  t.same(await loadOrCreateDigestKey(dir, undefined, 'a rotated signing key'), before, 'a rotated signing key changes nothing');
  const configured = Buffer.alloc(32, 7).toString('base64url');
  t.same(await loadOrCreateDigestKey(dir, configured, pem), Buffer.alloc(32, 7), 'NETWORK_DIGEST_KEY wins');
});
