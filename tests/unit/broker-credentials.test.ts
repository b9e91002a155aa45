import t from 'tap';
import { Metrics } from '../../core/metrics.js';
import { BROKER_CREDENTIAL_FAILURES, BROKER_CREDENTIALS_EXPIRED, dynsecCredentials, EXPIRY_LEASE_MS, EXPIRY_PAGE, type DynsecCredentialDeps } from '../../ingest/broker-credentials.js';

/**
 * The dynamic-security credential wiring without a broker or a database
 * (tests/integration/broker-credentials.test.ts runs it against a real
 * Mosquitto and PostgreSQL): the expiry sweep's paging, claims and
 * failures, and what every change counts. The store keeps the columns the
 * repository's queries read, with the same conditions.
 */
interface Row {
  expiresAt: number | null;
  revoked: boolean;
}

function setUp(rows: Map<string, Row>, failing: Set<string> = new Set()) {
  let now = 1_000_000;
  const broker = { disabled: [] as string[], enabled: [] as string[], deleted: [] as string[], passwords: new Map<string, string>(), selects: 0 };
  const failure = (id: string) => Promise.reject(new Error(`broker refused ${id}`));
  const store: DynsecCredentialDeps['store'] = {
    setBrokerPasswordExpiry: async (id, at) => {
      const row = rows.get(id);
      if (row && !row.revoked) row.expiresAt = at.getTime();
    },
    expiredBrokerPasswords: async (at, limit) => {
      broker.selects += 1;
      return [...rows]
        .filter(([, r]) => r.expiresAt !== null && r.expiresAt <= at.getTime() && !r.revoked)
        .sort(([, a], [, b]) => (a.expiresAt ?? 0) - (b.expiresAt ?? 0))
        .slice(0, limit)
        .map(([id]) => id);
    },
    claimExpiredBrokerPassword: async (id, at, leaseUntil) => {
      const row = rows.get(id);
      if (!row || row.revoked || row.expiresAt === null || row.expiresAt > at.getTime()) return false;
      row.expiresAt = leaseUntil.getTime();
      return true;
    },
    settleExpiredBrokerPassword: async (id, leaseUntil) => {
      const row = rows.get(id);
      if (row?.expiresAt === leaseUntil.getTime()) {
        row.expiresAt = null;
        return 'cleared';
      }
      return row && !row.revoked && row.expiresAt !== null ? 'renewed' : 'gone';
    },
  };
  const dynsec: DynsecCredentialDeps['dynsec'] = {
    provisionDevice: async (id, password, provisioned) => {
      if (failing.has(id)) return failure(id);
      broker.passwords.set(id, password);
      await provisioned?.();
    },
    deleteDevice: async (id) => (failing.has(id) ? failure(id) : void broker.deleted.push(id)),
    disableDevice: async (id) => (failing.has(id) ? failure(id) : void broker.disabled.push(id)),
    // As MosquittoDynsec.expireDevice: claim, disable, settle, enable again if renewed meanwhile.
    expireDevice: async (id, claim, settle) => {
      if (!(await claim())) return false;
      if (failing.has(id)) return failure(id);
      broker.disabled.push(id);
      if ((await settle()) !== 'renewed') return true;
      broker.enabled.push(id);
      return false;
    },
  };
  const metrics = new Metrics();
  const logged: string[] = [];
  const credentials = dynsecCredentials({ dynsec, store, metrics, log: { error: (_details, message) => void logged.push(message) }, clock: () => now });
  return {
    credentials,
    broker,
    metrics,
    logged,
    advance: (ms: number) => (now += ms),
    now: () => now,
    failures: (action: string) => metrics.value(BROKER_CREDENTIAL_FAILURES, { action }),
    expired: () => metrics.value(BROKER_CREDENTIALS_EXPIRED),
  };
}

const ids = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(4, '0')}`);

t.test('a sweep disables every expired password, page after page, and only those', async (t) => {
  const rows = new Map<string, Row>();
  const expired = ids('old', EXPIRY_PAGE * 2 + 50);
  for (const [i, id] of expired.entries()) rows.set(id, { expiresAt: 1_000_000 - 1000 - i, revoked: false });
  rows.set('fresh', { expiresAt: 1_000_000 + 60_000, revoked: false });
  rows.set('never', { expiresAt: null, revoked: false });
  const s = setUp(rows);
  await s.credentials.sweepExpired();
  t.same([...s.broker.disabled].sort(), [...expired].sort(), 'all 250, across three pages');
  t.equal(s.broker.selects, 3);
  t.equal(s.expired(), expired.length, 'each counted once');
  t.equal(rows.get('fresh')?.expiresAt, 1_000_000 + 60_000, 'a password not yet expired is left alone');
  t.ok(expired.every((id) => rows.get(id)?.expiresAt === null), 'each settled: nothing left to expire');
  await s.credentials.sweepExpired();
  t.equal(s.broker.disabled.length, expired.length, 'a later sweep finds nothing more');
  t.equal(s.failures('expire'), 0);
});

t.test('a password renewed while its expiry was being disabled is enabled again, and not counted', async (t) => {
  const rows = new Map<string, Row>([['renewed', { expiresAt: 999_000, revoked: false }]]);
  const s = setUp(rows);
  // A new token provisioned by another process between the claim and the settle.
  const settle = rows.get('renewed');
  const original = s.broker.disabled.push.bind(s.broker.disabled);
  s.broker.disabled.push = (...items: string[]) => {
    if (settle) settle.expiresAt = s.now() + 365 * 86_400_000;
    return original(...items);
  };
  await s.credentials.sweepExpired();
  t.same(s.broker.enabled, ['renewed']);
  t.equal(s.expired(), 0);
});

t.test('a device the broker does not take is counted, the rest of its page still handled, and tried again after its lease', async (t) => {
  const rows = new Map<string, Row>();
  const page = ids('dev', EXPIRY_PAGE);
  for (const id of [...page, ...ids('next', 10)]) rows.set(id, { expiresAt: 999_000, revoked: false });
  const failing = new Set([page[3] ?? '']);
  const s = setUp(rows, failing);
  await s.credentials.sweepExpired();
  t.equal(s.failures('expire'), 1, 'the failure counted');
  t.match(s.logged, ['broker credentials: expire failed']);
  t.equal(s.broker.selects, 1, 'the sweep stops after a page with a failure (its next page would hold the same devices)');
  t.equal(s.broker.disabled.length, EXPIRY_PAGE - 1, 'the rest of the page disabled');

  await s.credentials.sweepExpired();
  t.equal(s.broker.disabled.length, EXPIRY_PAGE - 1 + 10, 'the next sweep takes the others, not the leased one');
  failing.clear();
  s.advance(EXPIRY_LEASE_MS + 1);
  await s.credentials.sweepExpired();
  t.ok(s.broker.disabled.includes(page[3] ?? ''), 'after its lease it is disabled');
  t.equal(s.expired(), EXPIRY_PAGE + 10);
});

t.test('revoked devices are never read as expired', async (t) => {
  // Revoking clears the expiry; a row that still had one must not be read, refused by the claim, and read again without end.
  const rows = new Map<string, Row>(ids('gone', EXPIRY_PAGE).map((id) => [id, { expiresAt: 999_000, revoked: true }]));
  const s = setUp(rows);
  await s.credentials.sweepExpired();
  t.equal(s.broker.selects, 1);
  t.equal(s.broker.disabled.length, 0);
});

t.test('provisioning records the expiry; failures of every change are counted and logged', async (t) => {
  const rows = new Map<string, Row>([
    ['phone', { expiresAt: null, revoked: false }],
    ['bad', { expiresAt: null, revoked: false }],
  ]);
  const s = setUp(rows, new Set(['bad']));
  for (const action of ['provision', 'disable', 'delete', 'expire']) t.equal(s.failures(action), 0, `${action} failures start at zero (the series exists)`);
  await s.credentials.credentials.provision('phone', 'token-1', 5_000_000);
  t.equal(s.broker.passwords.get('phone'), 'token-1');
  t.equal(rows.get('phone')?.expiresAt, 5_000_000, "the password's expiry is recorded");
  await t.rejects(s.credentials.credentials.provision('bad', 'token-2', 5_000_000), /broker refused bad/, 'the caller sees a provisioning failure');
  t.equal(rows.get('bad')?.expiresAt, null, 'and no expiry is recorded for it');
  await t.rejects(s.credentials.credentials.withdraw('bad'), /broker refused/);
  s.credentials.disconnect(['bad', 'phone']);
  s.credentials.forget(['bad']);
  await new Promise((resolve) => setImmediate(resolve));
  t.same(s.broker.disabled, ['phone']);
  t.same({ provision: s.failures('provision'), disable: s.failures('disable'), delete: s.failures('delete') }, { provision: 1, disable: 1, delete: 2 });
  t.equal(s.logged.length, 4);
});
