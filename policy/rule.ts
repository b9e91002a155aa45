import { z } from 'zod';
import { idSchema } from '../core/identifiers.js';

/**
 * A consent rule, shaped after RFC 4745 (conditions / actions /
 * transformations) and RFC 5025 (sub-handling, provide-* permissions). This
 * is the foundation subset: identity by watcher id, sub-handling, and two
 * person fields. Later rules add groups, domains, sphere, validity,
 * location precision, devices and services without changing this shape.
 */
export const subHandlingSchema = z.enum(['block', 'polite-block', 'allow']);
export type SubHandling = z.infer<typeof subHandlingSchema>;

export const transformationsSchema = z
  .object({
    // RFC 5025 §3.2 / RFC 4745 §7: a permission a rule does not mention has
    // its lowest value, so an omitted field is never shown.
    /** "provide-persons" in spirit: availability and basic status. */
    availability: z.boolean().default(false),
    /** RFC 5025 §3.2.3 "provide-activities". */
    activities: z.boolean().default(false),
  })
  .strict();
export type Transformations = z.infer<typeof transformationsSchema>;

export const ruleBodySchema = z
  .object({
    conditions: z
      .object({
        identity: z.object({ watchers: z.array(idSchema).min(1).max(1000) }).strict(),
      })
      .strict(),
    actions: z.object({ subHandling: subHandlingSchema }).strict(),
    transformations: transformationsSchema.default({ availability: false, activities: false }),
  })
  .strict();
export type RuleBody = z.infer<typeof ruleBodySchema>;

export const ruleSchema = ruleBodySchema.extend({ id: idSchema });
export type Rule = z.infer<typeof ruleSchema>;
