import type { Rule, SubHandling, Transformations } from './rule.js';

/**
 * What one watcher may see of one owner, per RFC 4745 §10: collect the rules
 * whose conditions match, then combine them. For sub-handling the highest
 * value wins (RFC 5025 §3.1: block < polite-block < allow); for each boolean
 * transformation, true wins (the most permissive, RFC 4745 §10.2), taken
 * over the allow rules only: a block rule shows nothing, so it must never
 * widen what another rule shows.
 * No matching rule means nothing is shown (RFC 4745 §10: "the empty set").
 * A denial is a result, not an exception.
 */
export type Decision =
  | { readonly kind: 'allow'; readonly grant: Transformations; readonly ruleIds: readonly string[] }
  | { readonly kind: 'polite-block' }
  | { readonly kind: 'block' }
  | { readonly kind: 'no-match' };

const subHandlingRank: Record<SubHandling, number> = { block: 0, 'polite-block': 1, allow: 2 };

export function evaluateConsent(rules: readonly Rule[], watcherId: string): Decision {
  const matching = rules.filter((rule) => rule.conditions.identity.watchers.includes(watcherId));
  if (matching.length === 0) return { kind: 'no-match' };

  let subHandling: SubHandling = 'block';
  const grant: Transformations = { availability: false, activities: false };
  for (const rule of matching) {
    if (subHandlingRank[rule.actions.subHandling] > subHandlingRank[subHandling]) subHandling = rule.actions.subHandling;
    if (rule.actions.subHandling !== 'allow') continue;
    grant.availability ||= rule.transformations.availability;
    grant.activities ||= rule.transformations.activities;
  }
  if (subHandling !== 'allow') return { kind: subHandling };
  return { kind: 'allow', grant, ruleIds: matching.map((r) => r.id) };
}
