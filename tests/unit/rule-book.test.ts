import t from 'tap';
import { evaluateConsent } from '../../policy/evaluate-consent.js';
import { RuleBook } from '../../policy/rule-book.js';
import { ruleBodySchema, type Rule } from '../../policy/rule.js';

/** Rules are held frozen, with equal parts shared among owners, and still decide as before. */
const W1 = '11111111-1111-4111-8111-111111111111';
const W2 = '22222222-2222-4222-8222-222222222222';
const rule = (id: string, watcher: string): Rule => ({
  ...ruleBodySchema.parse({ conditions: { identity: { watchers: [watcher] } }, actions: { subHandling: 'allow' }, transformations: { availability: true, activities: true } }),
  id,
});

t.test('equal grants and empty lists are one object across owners; the watcher lists are not', async (t) => {
  const book = new RuleBook();
  book.replace('o1', [rule('r1', W1)]);
  book.replace('o2', [rule('r2', W2)]);
  const [a] = book.rules('o1');
  const [b] = book.rules('o2');
  if (!a || !b) throw new Error('rules missing');
  t.equal(a.transformations, b.transformations, 'one grant object');
  t.equal(a.actions, b.actions);
  t.equal(a.conditions.identity.groups, b.conditions.identity.groups, 'one empty list');
  t.equal(a.conditions.identity.except, b.conditions.identity.except);
  t.not(a.conditions.identity.watchers, b.conditions.identity.watchers);
  t.same(a.conditions.identity.watchers, [W1]);
  for (const part of [a, a.conditions, a.conditions.identity, a.conditions.identity.watchers, a.transformations, a.actions]) t.ok(Object.isFrozen(part));
  t.equal(a.id, 'r1');
});

t.test('shared parts decide exactly as before', async (t) => {
  const book = new RuleBook();
  book.replace('o1', [rule('r1', W1)]);
  const now = Date.parse('2026-05-04T10:00:00Z');
  t.match(evaluateConsent(book.policy('o1'), { id: W1, domain: undefined }, { now, sphere: undefined, zone: undefined }), { kind: 'allow', grant: { availability: true, activities: true, place: 'none' } });
  t.match(evaluateConsent(book.policy('o1'), { id: W2, domain: undefined }, { now, sphere: undefined, zone: undefined }), { kind: 'no-match' });
});
