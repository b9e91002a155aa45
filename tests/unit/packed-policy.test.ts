import fc from 'fast-check';
import t from 'tap';
import { evaluateConsent } from '../../policy/evaluate-consent.js';
import { packPolicy, SkeletonTable, unpackPolicy } from '../../policy/packed-policy.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema, type Group, type Rule, type RuleBodyInput } from '../../policy/rule.js';

/**
 * Policies at rest (policy/packed-policy.ts, RuleBook.restIdle): packing is
 * exact (every rule and group comes back as the very JSON it was, keys in
 * the same order), rules of one shape share a skeleton, and a rule book
 * whose policies rest decides, lists and notifies as one that holds them.
 */

const uuid = fc.uuid({ version: 4 });
const W1 = '11111111-1111-4111-8111-111111111111';
const W2 = '22222222-2222-4222-8222-222222222222';
const NOW = Date.parse('2026-05-04T10:00:00Z');

const ruleInput: fc.Arbitrary<RuleBodyInput> = fc.record(
  {
    conditions: fc.record(
      {
        identity: fc.record(
          {
            watchers: fc.array(uuid, { minLength: 1, maxLength: 4 }),
            groups: fc.array(uuid, { maxLength: 2 }),
            domains: fc.array(fc.constantFrom('a.example', 'b.example'), { maxLength: 2 }),
            anyAuthenticated: fc.boolean(),
            except: fc.record({ watchers: fc.array(uuid, { maxLength: 2 }), domains: fc.array(fc.constantFrom('c.example'), { maxLength: 1 }) }, { requiredKeys: [] }),
          },
          { requiredKeys: ['watchers'] },
        ),
        sphere: fc.constantFrom('home', 'work'),
        validity: fc.constant([{ from: '2026-01-01T00:00:00Z', until: '2026-12-31T00:00:00+01:00' }]),
        recurring: fc.constant([{ days: ['mon', 'fri'], from: '09:00', to: '17:30', timeZone: 'Europe/Berlin' }]),
        untilArrivalAt: fc.constantFrom('Home', 'Büro ✓'),
      },
      { requiredKeys: ['identity'] },
    ),
    actions: fc.record({ subHandling: fc.constantFrom('block', 'confirm', 'polite-block', 'allow') }),
    transformations: fc.record(
      {
        availability: fc.boolean(),
        activities: fc.boolean(),
        place: fc.constantFrom('none', 'type', 'zone'),
        location: fc.constantFrom('none', 'city', 'km', '100m', 'exact'),
        locationRetentionDays: fc.integer({ min: 0, max: 365 }),
        userInput: fc.constantFrom('false', 'bare', 'thresholds', 'full'),
        devices: fc.oneof(fc.constant('all' as const), fc.array(fc.constantFrom('phone', 'watch'), { maxLength: 2 })),
        note: fc.boolean(),
      },
      { requiredKeys: [] },
    ),
  },
  { requiredKeys: ['conditions', 'actions'] },
) as fc.Arbitrary<RuleBodyInput>;

const rule: fc.Arbitrary<Rule> = fc
  .tuple(ruleInput, uuid, fc.option(fc.constant('2026-05-01T08:00:00.000Z'), { nil: undefined }))
  .map(([input, id, arrivedAt]) => ({ ...ruleBodySchema.parse(input), id, ...(arrivedAt === undefined ? {} : { arrivedAt }) }));
const group: fc.Arbitrary<Group> = fc.record({ id: uuid, name: fc.string({ minLength: 1, maxLength: 12 }), members: fc.array(uuid, { maxLength: 3 }) });

t.test('packing is exact: every rule and group comes back as the same JSON (skeletons shared, and carried by the rule once the table is full)', async (t) => {
  const full = new SkeletonTable(1);
  fc.assert(
    fc.property(fc.array(rule, { maxLength: 4 }), fc.array(group, { maxLength: 2 }), fc.boolean(), (rules, groups, small) => {
      const table = small ? full : undefined;
      const packed = packPolicy({ rules, groups }, table);
      if (rules.length === 0 && groups.length === 0) return packed === undefined;
      if (packed === undefined) throw new Error('plain JSON rules were not packed');
      const back = unpackPolicy(packed, table);
      if (JSON.stringify(back.rules) !== JSON.stringify(rules)) throw new Error(`rules differ: ${JSON.stringify(back.rules)}`);
      if (JSON.stringify(back.groups) !== JSON.stringify(groups)) throw new Error('groups differ');
      return true;
    }),
    { numRuns: 300 },
  );
  t.pass('300 generated policies came back exact');
});

t.test('rules of one shape share a skeleton: what is packed per owner is the ids', async (t) => {
  const body = ruleBodySchema.parse({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true, place: 'type' } });
  // A table of its own: the skeleton is its first (index 0, one digit).
  const table = new SkeletonTable();
  const a = packPolicy({ rules: [{ ...body, id: 'aaaaaaaa-0000-4000-8000-000000000001' }], groups: [] }, table);
  const b = packPolicy({ rules: [{ ...body, id: 'bbbbbbbb-0000-4000-8000-000000000002', conditions: { ...body.conditions, identity: { ...body.conditions.identity, watchers: [W2] } } }], groups: [] }, table);
  if (a === undefined || b === undefined) throw new Error('not packed');
  t.equal(a.length, 36, 'one allow rule naming one watcher packs to 36 characters: its skeleton and watcher count, then 16 bytes per id');
  t.notOk(a.includes('aaaaaaaa'), 'a UUID is packed as its bytes, not its text');
  t.equal(a.slice(0, 4), b.slice(0, 4), 'the same skeleton');
  t.not(a.slice(4), b.slice(4), 'other ids');
  t.same(unpackPolicy(a, table).rules[0]?.id, 'aaaaaaaa-0000-4000-8000-000000000001');
});

t.test('the compact form is for policies without groups whose ids are UUIDs; any other packs as JSON; a damaged one is refused', async (t) => {
  const body = ruleBodySchema.parse({ conditions: { identity: { watchers: [W1, W2] } }, actions: { subHandling: 'allow' } });
  const uuids = { rules: [{ ...body, id: 'aaaaaaaa-0000-4000-8000-000000000001' }], groups: [] };
  const policies = {
    compact: uuids,
    'with a group': { ...uuids, groups: [{ id: W2, name: 'family', members: [W1] }] },
    'a made-up id': { rules: [{ ...body, id: 'r1' }], groups: [] },
    'an upper-case UUID': { rules: [{ ...body, id: 'AAAAAAAA-0000-4000-8000-000000000001' }], groups: [] },
  };
  const anyone = ruleBodySchema.parse({ conditions: { identity: { anyAuthenticated: true } }, actions: { subHandling: 'allow' } });
  const noWatchers = { rules: [{ ...anyone, id: 'cccccccc-0000-4000-8000-000000000003' }, { ...body, id: 'dddddddd-0000-4000-8000-000000000004' }], groups: [] };
  const packedNoWatchers = packPolicy(noWatchers);
  t.notOk(packedNoWatchers?.startsWith('['), 'a rule naming no watcher packs compact too');
  t.equal(JSON.stringify(unpackPolicy(packedNoWatchers as string).rules), JSON.stringify(noWatchers.rules), 'and comes back exact, beside a rule naming two');
  for (const [what, policy] of Object.entries(policies)) {
    const packed = packPolicy(policy);
    if (packed === undefined) throw new Error('not packed');
    t.equal(packed.startsWith('['), what !== 'compact', `${what}: ${what === 'compact' ? 'compact' : 'JSON'}`);
    const back = unpackPolicy(packed);
    t.equal(JSON.stringify([back.rules, back.groups]), JSON.stringify([policy.rules, policy.groups]), `${what}: comes back exact`);
  }
  const compact = packPolicy(uuids);
  t.throws(() => unpackPolicy((compact as string).slice(0, 30)), /not a packed policy/, 'cut short');
  t.throws(() => unpackPolicy('x'), /not a packed policy/, 'no number');
});

t.test('what JSON would not give back is not packed', async (t) => {
  const body = ruleBodySchema.parse({ conditions: { identity: { watchers: [W1] } }, actions: { subHandling: 'allow' } });
  t.equal(packPolicy({ rules: [{ ...body, id: 'r1', arrivedAt: undefined }], groups: [] }), undefined, 'an undefined field');
  t.equal(packPolicy({ rules: [{ ...body, id: 'r1', transformations: { ...body.transformations, locationRetentionDays: Number.NaN } }], groups: [] }), undefined, 'NaN');
  t.equal(packPolicy({ rules: [], groups: [] }), undefined, 'nothing to pack');
});

const allowRule = (id: string, watchers: string[], groups: string[] = []): Rule => ({
  ...ruleBodySchema.parse({ conditions: { identity: { watchers, groups } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true } }),
  id,
});

t.test('a rule book puts idle policies at rest and gives them back equal, frozen and shared', async (t) => {
  const book = new RuleBook();
  const G = '9a9a9a9a-0000-4000-8000-000000000001';
  book.replaceGroups('o1', [{ id: G, name: 'family', members: [W2] }]);
  book.replace('o1', [allowRule('r1', [W1], [G])]);
  book.replace('o2', [allowRule('r2', [W2])]);
  const before = JSON.stringify(book.policy('o1'));
  const grant = book.rules('o2')[0]?.transformations;

  t.equal(await book.restIdle(), 0, 'just changed: not yet');
  t.equal(await book.restIdle(), 2, 'idle since the previous sweep: at rest');
  t.equal(book.heldCount, 0);

  const policy = book.policy('o1');
  t.equal(JSON.stringify(policy), before, 'the same rules and groups, in the same order');
  for (const part of [policy, policy.rules, policy.rules[0], policy.rules[0]?.conditions, policy.rules[0]?.conditions.identity, policy.rules[0]?.conditions.identity.watchers, policy.groups, policy.groups[0], policy.groups[0]?.members]) {
    t.ok(Object.isFrozen(part), 'frozen again');
  }
  t.equal(book.rules('o2')[0]?.transformations, grant, 'equal parts are shared again: the same grant object');
  t.equal(book.policy('o1'), policy, 'unpacked once, then held');
  t.equal(book.heldCount, 2);
  t.match(evaluateConsent(policy, { id: W2, domain: undefined }, { now: NOW, sphere: undefined, zone: undefined }), { kind: 'allow' }, 'a group member still matches');
  t.match(evaluateConsent(book.policy('o2'), { id: W1, domain: undefined }, { now: NOW, sphere: undefined, zone: undefined }), { kind: 'no-match' });
});

t.test('a policy someone listens to, or that was consulted, stays held; changes and removal work at rest', async (t) => {
  const book = new RuleBook();
  book.replace('watched', [allowRule('r1', [W1])]);
  book.replace('read', [allowRule('r2', [W1])]);
  book.replace('idle', [allowRule('r3', [W1])]);
  let told = 0;
  const off = book.watch('watched', () => (told += 1));
  await book.restIdle();
  book.policy('read');
  t.equal(await book.restIdle(), 1, 'only the idle one rests');
  t.equal(book.heldCount, 2);
  off();

  // A change to a policy at rest: the other rules are kept, and listeners told.
  let idleTold = 0;
  book.watch('idle', () => (idleTold += 1));
  book.replace('idle', [...book.rules('idle'), allowRule('r4', [W2])]);
  t.same(
    book.rules('idle').map((r) => r.id),
    ['r3', 'r4'],
  );
  t.equal(idleTold, 1);
  t.equal(told, 0, 'resting told nobody');

  // Erasure of an owner at rest.
  await book.restIdle();
  await book.restIdle();
  book.remove('read');
  t.same(book.rules('read'), []);
  book.replace('idle', []);
  t.same(book.policy('idle'), { rules: [], groups: [] }, 'emptied: holds nothing');
  t.equal(await book.restIdle(), 0);
});

t.test('a rule book swept after every step answers as one never swept (random operations)', async (t) => {
  const OWNERS = ['o1', 'o2', 'o3'];
  const WATCHERS = [W1, W2];
  const GROUP = '9a9a9a9a-0000-4000-8000-000000000001';
  const step = fc.oneof(
    fc.record({ op: fc.constant('replace' as const), owner: fc.constantFrom(...OWNERS), rules: fc.array(rule, { maxLength: 3 }) }),
    fc.record({ op: fc.constant('groups' as const), owner: fc.constantFrom(...OWNERS), members: fc.array(fc.constantFrom(...WATCHERS), { maxLength: 2 }) }),
    fc.record({ op: fc.constant('remove' as const), owner: fc.constantFrom(...OWNERS) }),
    fc.record({ op: fc.constant('read' as const), owner: fc.constantFrom(...OWNERS) }),
  );
  await fc.assert(
    fc.asyncProperty(fc.array(step, { maxLength: 25 }), async (steps) => {
      const swept = new RuleBook();
      const kept = new RuleBook();
      const told = { swept: 0, kept: 0 };
      for (const owner of OWNERS) {
        // Listeners on one owner keep it held; the others rest.
        if (owner !== 'o1') continue;
        swept.watch(owner, () => (told.swept += 1));
        kept.watch(owner, () => (told.kept += 1));
      }
      for (const s of steps) {
        for (const book of [swept, kept]) {
          if (s.op === 'replace') book.replace(s.owner, s.rules);
          else if (s.op === 'groups') book.replaceGroups(s.owner, [{ id: GROUP, name: 'g', members: s.members }]);
          else if (s.op === 'remove') book.remove(s.owner);
          else if (s.op === 'read') book.policy(s.owner);
        }
        await swept.restIdle();
        await swept.restIdle();
        for (const owner of OWNERS) {
          const a = swept.policy(owner);
          const b = kept.policy(owner);
          if (JSON.stringify(a) !== JSON.stringify(b)) throw new Error(`${owner}: ${JSON.stringify(a)} != ${JSON.stringify(b)}`);
          for (const id of WATCHERS) {
            const context = { now: NOW, sphere: undefined, zone: undefined };
            const da = evaluateConsent(a, { id, domain: 'a.example' }, context);
            const db = evaluateConsent(b, { id, domain: 'a.example' }, context);
            if (JSON.stringify(da) !== JSON.stringify(db)) throw new Error(`${owner}/${id}: decisions differ`);
          }
        }
        // Reading every owner above kept them all held: sweep twice more so the next step starts from rest.
        await swept.restIdle();
        await swept.restIdle();
      }
      if (told.swept !== told.kept) throw new Error(`listeners told ${told.swept} times, not ${told.kept}`);
      return true;
    }),
    { numRuns: 100 },
  );
  t.pass('100 random sequences');
});
