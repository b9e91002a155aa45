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
