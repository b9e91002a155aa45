import t from 'tap';
import { ReplicaLedger, syncMessageSchema } from '../../core/replication.js';

const A = 'node-a#abc123';
const OWNER_1 = '00000000-0000-4000-8000-000000000001';
const OWNER_2 = '00000000-0000-4000-8000-000000000002';

t.test('owners stay pending for a node until it says they are stored', async (t) => {
  const ledger = new ReplicaLedger();
  t.equal(ledger.received(A, 1, OWNER_1), 'pending');
  t.equal(ledger.received(A, 2, OWNER_2), 'pending');
  t.equal(ledger.pendingCount, 2);
  ledger.persisted(A, 1);
  t.equal(ledger.pendingCount, 1, 'only what the mark covers is released');
  t.equal(ledger.received(A, 3, OWNER_1), 'pending');
  ledger.persisted(A, 2);
  t.same(ledger.takeOver(A), [OWNER_1], 'a later change of an owner keeps it pending past an earlier mark');
});

t.test('a dead node hands its pending owners over, and its late messages are written here', async (t) => {
  const ledger = new ReplicaLedger();
  ledger.received(A, 5, OWNER_1);
  t.same(ledger.takeOver(A), [OWNER_1]);
  t.equal(ledger.pendingCount, 0);
  t.equal(ledger.received(A, 6, OWNER_2), 'write-here', 'a message that arrives after the will');
  t.same(ledger.takeOver(A), [], 'nothing is handed over twice');
  ledger.persisted(A, 6);
  t.equal(ledger.received(A, 7, OWNER_2), 'pending', 'a node that reports a write is alive again (it reconnected)');
});

t.test('sync messages are validated like any MQTT payload', async (t) => {
  const event = { kind: 'battery', at: '2026-11-25T10:00:00.000Z', level: 40, charging: false };
  t.ok(syncMessageSchema.safeParse({ v: 1, type: 'signals', node: A, seq: 1, owner: OWNER_1, signals: [{ deviceId: OWNER_2, event }] }).success);
  const bad = [
    { v: 2, type: 'persisted', node: A, seq: 1 },
    { v: 1, type: 'persisted', node: 'no-incarnation', seq: 1 },
    { v: 1, type: 'persisted', node: A, seq: -1 },
    { v: 1, type: 'signals', node: A, seq: 1, owner: OWNER_1, signals: [] },
    { v: 1, type: 'signals', node: A, seq: 1, owner: 'alice', signals: [{ deviceId: OWNER_2, event }] },
    { v: 1, type: 'signals', node: A, seq: 1, owner: OWNER_1, signals: [{ deviceId: OWNER_2, event: { ...event, level: 400 } }] },
    { v: 1, type: 'gone' },
  ];
  for (const message of bad) t.notOk(syncMessageSchema.safeParse(message).success, JSON.stringify(message));
});
