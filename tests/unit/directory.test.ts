import t from 'tap';
import { Directory } from '../../core/directory.js';
import { DEFAULT_OWNER_SETTINGS, ownerSettingsSchema } from '../../core/owner-settings.js';

/** What the directory holds once per owner, and what it shares. */
const copy = (s: string) => Buffer.from(s, 'latin1').toString('latin1');

t.test('settings equal to the defaults are not held per owner', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putSettings('o1', ownerSettingsSchema.parse({}));
  t.equal(directory.settings('o1'), DEFAULT_OWNER_SETTINGS, 'the one shared default object');
  t.ok(Object.isFrozen(DEFAULT_OWNER_SETTINGS));
  const own = ownerSettingsSchema.parse({ idleAfterSeconds: 120 });
  directory.putSettings('o1', own);
  t.equal(directory.settings('o1'), own, 'settings of its own are kept');
  directory.putSettings('o1', ownerSettingsSchema.parse({}));
  t.equal(directory.settings('o1'), DEFAULT_OWNER_SETTINGS, 'and dropped again when back to the defaults');
});

t.test("devices share their owner's id string; ownerId() hands out the directory's copy", async (t) => {
  const directory = new Directory();
  const id = crypto.randomUUID();
  directory.putOwner({ id, handle: 'alice' });
  directory.putDevice({ id: 'd1', ownerId: copy(id), deviceClass: copy('phone'), revoked: false });
  const owner = directory.owner(id);
  t.ok(owner);
  t.equal(directory.device('d1')?.ownerId, owner?.id);
  t.equal(directory.ownerId(copy(id)), owner?.id);
  t.equal(directory.ownerId('unknown'), 'unknown', 'an unknown id is returned as given');
});

t.test('revocations by token id and by admin subject: replaced whole; only the streams of a newly revoked token are told', async (t) => {
  const directory = new Directory();
  let told = 0;
  let others = 0;
  directory.watchToken('j1', () => (told += 1));
  directory.watchToken('j2', () => (others += 1));
  directory.watchSubject('w1', () => (others += 1));
  t.notOk(directory.tokenIdRevoked('j1'));
  t.notOk(directory.tokenIdRevoked(undefined));
  directory.setTokenRevocations(['j1'], [['ops', 2000]]);
  t.ok(directory.tokenIdRevoked('j1'));
  t.notOk(directory.tokenIdRevoked('j2'));
  t.notOk(directory.tokenIdRevoked(undefined), 'a token without an id cannot be named');
  t.ok(directory.adminTokenRevoked('ops', 2000), 'issued at the cutoff');
  t.notOk(directory.adminTokenRevoked('ops', 2001), 'issued after it');
  t.ok(directory.adminTokenRevoked('ops', undefined), 'one that does not say when counts as revoked');
  t.notOk(directory.adminTokenRevoked('other', 0));
  t.notOk(directory.tokenRevoked('ops', 0), "admin subjects are apart from owners' and watchers' cutoffs");
  t.equal(told, 1, 'the stream opened with the revoked token re-checks its caller');
  t.equal(others, 0, 'no other stream is woken');
  directory.setTokenRevocations(['j1'], [['ops', 2000]]);
  t.equal(told, 1, 'the same revocations again (a purge that removed nothing) tell nobody');
  directory.setTokenRevocations([], [['ops', 2000]]);
  t.notOk(directory.tokenIdRevoked('j1'), 'an expired revocation purged');
  t.equal(told, 1, 'nobody is woken by a purge');
  directory.setTokenRevocations(['j2'], [['ops', 2000]]);
  t.equal(others, 1);
});

t.test('a revoked device or watcher stays revoked when an older record is put after (a reload that read before the revocation)', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: false });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: true });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: false });
  t.equal(directory.device('d1')?.revoked, true);
  t.equal(directory.activeDevice('d1'), undefined, 'it may not publish');
  let told = 0;
  directory.watchSubject('w1', () => (told += 1));
  directory.putWatcher({ id: 'w1', kind: 'person', name: 'Bob', domain: undefined, revoked: false });
  directory.putWatcher({ id: 'w1', kind: 'person', name: 'Bob', domain: undefined, revoked: true });
  t.equal(told, 1, "the watcher's streams are told once");
  directory.putWatcher({ id: 'w1', kind: 'person', name: 'Bobby', domain: undefined, revoked: false });
  t.equal(directory.activeWatcher('w1'), undefined, 'it matches no rule');
  t.equal(told, 1);
});

t.test('owners by id and by handle: a changed handle no longer names the owner; erasure forgets both', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putOwner({ id: 'o2', handle: 'bob' });
  t.same(directory.ownerByHandle('alice'), { id: 'o1', handle: 'alice' });
  directory.putOwner({ id: 'o1', handle: 'alice2' });
  t.equal(directory.ownerByHandle('alice'), undefined, 'the old handle is gone');
  t.same(directory.owner('o1'), { id: 'o1', handle: 'alice2' });
  t.same(directory.ownerByHandle('alice2'), { id: 'o1', handle: 'alice2' });
  t.same(directory.ownerIds().sort(), ['o1', 'o2']);
  directory.removeOwner('o1');
  t.equal(directory.owner('o1'), undefined);
  t.equal(directory.ownerByHandle('alice2'), undefined);
  t.same(directory.ownerByHandle('bob'), { id: 'o2', handle: 'bob' }, 'the other owner stays');
});

t.test('a device record says whether it is revoked, and activeDevice hands out only the others', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: false });
  t.equal(directory.device('d1')?.revoked, false);
  t.equal(directory.activeDevice('d1')?.ownerId, 'o1');
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: true });
  t.equal(directory.device('d1')?.revoked, true);
  t.equal(directory.activeDevice('d1'), undefined);
  t.same(
    directory.devicesOf('o1').map((d) => [d.id, d.deviceClass, d.revoked]),
    [['d1', 'phone', true]],
  );
});

t.test("an erased owner's device slots are reused by the next devices, and hold nothing of the old ones", async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putOwner({ id: 'o2', handle: 'bob' });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: false });
  directory.putDevice({ id: 'd2', ownerId: 'o1', deviceClass: 'watch', revoked: true });
  directory.putDevice({ id: 'd3', ownerId: 'o2', deviceClass: 'desk-sensor', revoked: false });
  directory.removeOwner('o1');
  t.equal(directory.device('d1'), undefined);
  t.equal(directory.device('d2'), undefined);
  t.equal(directory.deviceClass('d2'), undefined);
  t.same(directory.devicesOf('o1'), []);
  directory.putOwner({ id: 'o3', handle: 'carol' });
  // Two new devices take the two freed slots: neither is revoked, neither belongs to o1.
  directory.putDevice({ id: 'd4', ownerId: 'o3', deviceClass: 'car', revoked: false });
  directory.putDevice({ id: 'd5', ownerId: 'o3', deviceClass: 'phone', revoked: false });
  directory.putDevice({ id: 'd6', ownerId: 'o3', deviceClass: 'watch', revoked: false });
  t.same(
    ['d3', 'd4', 'd5', 'd6'].map((id) => directory.activeDevice(id)).map((d) => d && [d.id, d.ownerId, d.deviceClass, d.revoked]),
    [
      ['d3', 'o2', 'desk-sensor', false],
      ['d4', 'o3', 'car', false],
      ['d5', 'o3', 'phone', false],
      ['d6', 'o3', 'watch', false],
    ],
  );
  t.equal(directory.deviceClass('d4'), 'car');
  t.same(
    directory
      .devicesOf('o3')
      .map((d) => d.id)
      .sort(),
    ['d4', 'd5', 'd6'],
  );
  t.same(
    directory.devicesOf('o2').map((d) => d.id),
    ['d3'],
  );
});

t.test('a device put again keeps its slot: a new class or owner is taken, a revocation stays', async (t) => {
  const directory = new Directory();
  directory.putOwner({ id: 'o1', handle: 'alice' });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'phone', revoked: true });
  directory.putDevice({ id: 'd1', ownerId: 'o1', deviceClass: 'tablet', revoked: false });
  t.same(directory.device('d1'), { id: 'd1', ownerId: 'o1', deviceClass: 'tablet' });
  t.equal(directory.device('d1')?.revoked, true, 'a revocation is never undone');
  t.equal(directory.activeDevice('d1'), undefined);
  t.equal(directory.devicesOf('o1').length, 1);
});
