import { createHmac } from 'node:crypto';
import type { ClassSet, Transformations } from './rule.js';

/** A device as a view names it: its occurrence id (RFC 4479 §3.4, an xs:ID) and its deviceID URN (RFC 4479 §11.1.3). */
export interface DeviceRef {
  readonly occurrence: string;
  readonly urn: string;
}

/**
 * The ids a view gives a device, never its service id (which is also its
 * MQTT user name, known to the device, the broker's operator and anyone
 * the owner told). Each is an HMAC under the service's key, so nobody can
 * compute one from a device id or confirm a guessed id against one.
 *
 * They are keyed by the device grant too (RFC 5025 §3.3.1 provide-devices
 * and provide-services, the class sets): watchers shown different sets of
 * devices get unrelated ids, so two of them comparing views cannot learn
 * which of one's devices are the other's, that is, the devices' classes,
 * which no grant shows (provide-class, RFC 5025 §3.3.2). Watchers under
 * the same class sets see the same ids: their views of devices are the
 * same anyway, and views stay shared per grant (api/watcher-views.ts).
 * Different class sets that happen to select the same devices (`all` and
 * `phone` for an owner with phones only) still give different ids. Ids
 * stay stable while the device grant does (RFC 4479 §11.1.3 wants a
 * deviceID to persist); a rule that changes which classes it shows shows
 * its watchers new ids.
 */
export class DeviceRefs {
  readonly #key: Buffer;
  // Views are built afresh on each state change: hash each (grant, device) once. Bounded: cleared past a cap.
  readonly #known = new Map<string, DeviceRef>();
  // A grant object is frozen and replaced whole with its rule (policy/rule-book.ts): its scope is worked out once.
  readonly #scopes = new WeakMap<Transformations, string>();

  /** `key`: at least 32 secret bytes, the same in every process of a group (or ids change with the process serving). */
  constructor(key: Uint8Array) {
    if (key.length < 32) throw new RangeError('the device id key must be at least 32 bytes');
    this.#key = Buffer.from(key);
  }

  /** The key derived from another secret of the service (so there is no further secret to keep or share). */
  static derivedFrom(secret: Uint8Array): DeviceRefs {
    return new DeviceRefs(createHmac('sha256', secret).update('presence device ids v1').digest());
  }

  of(grant: Transformations, deviceId: string): DeviceRef {
    const scope = this.#scope(grant);
    const cacheKey = `${scope}\0${deviceId}`;
    const known = this.#known.get(cacheKey);
    if (known) return known;
    const h = createHmac('sha256', this.#key).update(scope).update('\0').update(deviceId).digest('hex');
    // An RFC 9562 version 8 UUID carrying the digest: a valid urn:uuid.
    const variant = ((parseInt(h.slice(16, 17), 16) & 0x3) | 0x8).toString(16);
    const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
    // The occurrence id from other bits than the URN's, so neither is a prefix of the other.
    const ref: DeviceRef = { occurrence: `d${h.slice(32, 44)}`, urn: `urn:uuid:${uuid}` };
    if (this.#known.size >= MAX_KNOWN) this.#known.clear();
    this.#known.set(cacheKey, ref);
    return ref;
  }

  #scope(grant: Transformations): string {
    let scope = this.#scopes.get(grant);
    if (scope === undefined) {
      scope = `devices=${classSetKey(grant.devices)};services=${classSetKey(grant.services)}`;
      if (Object.isFrozen(grant)) this.#scopes.set(grant, scope);
    }
    return scope;
  }
}

const MAX_KNOWN = 100_000;

/** A class set as a set: its order and repeats do not change what it shows. */
function classSetKey(set: ClassSet): string {
  return set === 'all' ? '*' : [...new Set(set)].sort().join(',');
}
