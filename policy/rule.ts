import { z } from 'zod';
import { idSchema } from '../core/identifiers.js';
import { printableText } from '../core/text.js';
import { sphereSchema, timeZoneSchema } from '../core/owner-settings.js';

/**
 * A consent rule, shaped after RFC 4745 (conditions / actions /
 * transformations) and RFC 5025 (sub-handling, provide-* permissions), with
 * RFC 6772's location precision. Every permission a rule does not mention
 * has its lowest value (RFC 4745 §10.2, RFC 5025 §3.3): an omitted field is
 * never shown. Rule bodies stored before a field existed parse to the same
 * meaning they had (every new field defaults to "nothing").
 */

// --- conditions (RFC 4745 §7) ----------------------------------------------

/** A DNS domain, lower case (RFC 4745 §7.1.3 `<many domain>` compares case-insensitively, so it is normalized once here). */
export const domainSchema = z
  .string()
  .max(253)
  .regex(/^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/, 'must be a lower-case DNS domain such as example.com');

const ids = (max: number) => z.array(idSchema).max(max).default([]);

/**
 * RFC 4745 §7.1: who the rule is for. Listed watchers and members of the
 * owner's groups match by identity (`<one>`); `domains` and
 * `anyAuthenticated` match many watchers (`<many domain>` / `<many>`) except
 * those in `except` (RFC 4745 §7.1.3: exceptions apply to `<many>` only).
 * Every watcher is authenticated (there is no anonymous read), so `<many>`
 * is "any authenticated watcher".
 */
export const identitySchema = z
  .object({
    watchers: ids(1000),
    groups: ids(50),
    domains: z.array(domainSchema).max(50).default([]),
    anyAuthenticated: z.boolean().default(false),
    except: z
      .object({ watchers: ids(1000), domains: z.array(domainSchema).max(50).default([]) })
      .strict()
      .default({ watchers: [], domains: [] }),
  })
  .strict()
  .refine((i) => i.watchers.length + i.groups.length + i.domains.length > 0 || i.anyAuthenticated, {
    message: 'name at least one watcher, group or domain, or set anyAuthenticated',
  });
export type Identity = z.infer<typeof identitySchema>;

const instant = z.iso.datetime({ offset: true });
const hhmm = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, 'must be HH:MM (24 h)');
export const weekdaySchema = z.enum(['mon', 'tue', 'wed', 'thu', 'fri', 'sat', 'sun']);
export type Weekday = z.infer<typeof weekdaySchema>;

/** RFC 4745 §7.4: the rule holds within any of these intervals. */
export const validityIntervalSchema = z
  .object({ from: instant, until: instant })
  .strict()
  .refine((v) => Date.parse(v.from) < Date.parse(v.until), { message: 'from must be before until' });

/**
 * Recurring windows (an extension: RFC 4745 has absolute intervals only),
 * in the window's own time zone, so that the rule does not change meaning
 * when the owner travels. `to` before `from` spans midnight; the day is the
 * day the window opens.
 */
export const recurringWindowSchema = z
  .object({ days: z.array(weekdaySchema).min(1).max(7), from: hhmm, to: hhmm, timeZone: timeZoneSchema })
  .strict()
  .refine((w) => w.from !== w.to, { message: 'from and to must differ' });
export type RecurringWindow = z.infer<typeof recurringWindowSchema>;

export const conditionsSchema = z
  .object({
    identity: identitySchema,
    /** RFC 4745 §7.3: only while the owner's current sphere is this one. */
    sphere: sphereSchema.optional(),
    validity: z.array(validityIntervalSchema).min(1).max(16).optional(),
    recurring: z.array(recurringWindowSchema).min(1).max(16).optional(),
    /**
     * "Share until I arrive": the rule holds until the owner is seen at this
     * zone (one of their own zone names). The service records the arrival
     * (`arrivedAt`) and the rule holds no more, even after the owner leaves.
     */
    untilArrivalAt: z.string().trim().min(1).max(64).optional(),
  })
  .strict();
export type Conditions = z.infer<typeof conditionsSchema>;

// --- actions (RFC 5025 §3.2.1) -----------------------------------------------

/** Ordered as RFC 5025 §3.2.1 numbers them: block(0) < confirm(1) < polite-block(2) < allow(3). */
export const subHandlingSchema = z.enum(['block', 'confirm', 'polite-block', 'allow']);
export type SubHandling = z.infer<typeof subHandlingSchema>;

// --- transformations (RFC 5025 §3.3, RFC 6772 §6.5) ---------------------

/** How much of the place: none, its RFC 4589 type, or also the owner's zone name (which implies the type). */
export const placePermissionSchema = z.enum(['none', 'type', 'zone']);
/** RFC 6772 §6.5.2 grid sizes, coarsest first after none; `exact` is the fix itself. */
export const locationPrecisionSchema = z.enum(['none', 'city', 'km', '100m', 'exact']);
export type LocationPrecision = z.infer<typeof locationPrecisionSchema>;
/** RFC 5025 §3.3.2 provide-user-input, in its order. */
export const userInputPermissionSchema = z.enum(['false', 'bare', 'thresholds', 'full']);
/** RFC 5025 §3.3.1/§3.3.2: all, or the devices (services) of these RFC 4480 classes. */
export const classSetSchema = z.union([
  z.literal('all'),
  z
    .array(z.string().regex(/^[a-z][a-z0-9-]{0,31}$/, 'must be a device class such as phone'))
    .max(16),
]);
export type ClassSet = z.infer<typeof classSetSchema>;

export const transformationsSchema = z
  .object({
    /** The basic status and availability (RFC 5025 §3.3.1 provide-persons, in spirit). */
    availability: z.boolean().default(false),
    /** RFC 5025 §3.3.2 provide-activities. */
    activities: z.boolean().default(false),
    /** RFC 5025 §3.3.2 provide-place-type; `zone` adds the zone's name. */
    place: placePermissionSchema.default('none'),
    /** RFC 5025 §3.3.2 provide-sphere. */
    sphere: z.boolean().default(false),
    /** RFC 6772 provide-location, snapped to a fixed grid below `exact`. */
    location: locationPrecisionSchema.default('none'),
    /** RFC 4119 §2.2.2 usage rule sent with the location: may the recipient pass it on. */
    locationRetransmission: z.boolean().default(false),
    /** RFC 4119 §2.2.2 retention-expiry: the end of the current UTC day plus this many days. */
    locationRetentionDays: z.number().int().min(0).max(365).default(0),
    /** RFC 5025 §3.3.2 provide-user-input. */
    userInput: userInputPermissionSchema.default('false'),
    /** RFC 5025 §3.3.1 provide-devices. */
    devices: classSetSchema.default([]),
    /** RFC 5025 §3.3.1 provide-services (one service tuple per device). */
    services: classSetSchema.default([]),
    /** RFC 5025 §3.3.2 provide-note: the owner's own note. */
    note: z.boolean().default(false),
    /** RFC 5025 §3.3.2 provide-time-offset. */
    timeOffset: z.boolean().default(false),
  })
  .strict();
export type Transformations = z.infer<typeof transformationsSchema>;
export const NOTHING: Transformations = Object.freeze(transformationsSchema.parse({}));

export const ruleBodySchema = z
  .object({
    conditions: conditionsSchema,
    actions: z.object({ subHandling: subHandlingSchema }).strict(),
    transformations: transformationsSchema.default(NOTHING),
  })
  .strict();
export type RuleBody = z.infer<typeof ruleBodySchema>;
export type RuleBodyInput = z.input<typeof ruleBodySchema>;

export const ruleSchema = ruleBodySchema.extend({
  id: idSchema,
  /** Set by the service when an untilArrivalAt rule's owner arrived (RFC 3339). */
  arrivedAt: instant.optional(),
});
export type Rule = z.infer<typeof ruleSchema>;

/** An owner-defined group of watchers, named in rules by its id. */
export const groupBodySchema = z
  .object({
    name: printableText(64),
    members: z.array(idSchema).max(1000).default([]),
  })
  .strict();
export type GroupBody = z.infer<typeof groupBodySchema>;
export const groupSchema = groupBodySchema.extend({ id: idSchema });
export type Group = z.infer<typeof groupSchema>;
