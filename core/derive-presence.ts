import type { SensorEvent } from './events.js';
import { DEFAULT_OWNER_SETTINGS, type OwnerSettings, type Zone } from './owner-settings.js';
import type { Activity, Availability, DeviceSeen, Location, Place, PresenceState, TraceEntry, UserInput } from './presence.js';
import { NO_TRACE, OFFLINE_STATE, sharedActivities } from './presence.js';
import { signalKey, type Signal } from './signal-store.js';

export interface DeriveSettings {
  /** A device silent for this long stops counting; all silent means offline. */
  readonly offlineAfterMs: number;
}

/**
 * How long a reported state can count at most, even while its device keeps
 * reporting other things: a call state stuck by an app crash must not keep
 * the owner "on the phone" all day. Kinds not listed live as long as their
 * device does (a newer report replaces them, or the device goes silent).
 */
export const SIGNAL_LIFETIME_MS: Partial<Record<SensorEvent['kind'], number>> = {
  call: 4 * 3_600_000,
  headset: 4 * 3_600_000,
  focus: 24 * 3_600_000,
  sleep: 16 * 3_600_000,
  occupancy: 12 * 3_600_000,
  'ble-room': 3_600_000,
  location: 6 * 3_600_000,
};

export interface Derived {
  readonly state: PresenceState;
  /**
   * The first instant at which the same signals would derive a different
   * state (a calendar entry starts or ends, a dwell time completes, quiet
   * hours begin, the owner goes silent). Callers re-derive at or after it;
   * Infinity if only a new event can change it.
   */
  readonly validUntil: number;
}

/**
 * Pure: signals + settings + owner settings + now -> presence state, with a
 * trace of the rule and signals behind each field (for the owner only).
 * `explain` false leaves the trace empty: the ingest path derives on every
 * event and never shows the trace, so it does not pay for building it.
 *
 * A silent device stops counting: a device's signals count only while that
 * device has reported anything within offlineAfterMs; some states also have
 * a lifetime of their own (SIGNAL_LIFETIME_MS). Signal kinds the owner
 * ignores never count. Calendar entries count inside their [start, end).
 *
 * Availability and activities: every condition that holds adds its activity
 * (most significant first); the first that holds sets the availability.
 *
 *   condition (live devices only)                          activity      availability
 *   1. no device reported within offlineAfterMs            -             offline (nothing else)
 *   2. a worn wearable reports asleep                      sleeping      do-not-disturb
 *   3. a phone in a call, or a headset in a call           on-the-phone  busy
 *   4. a busy calendar entry covering now                  meeting       busy
 *   5. in-vehicle motion, confident, lasting the dwell     steering      busy
 *   6. focus / do-not-disturb on                           -             do-not-disturb
 *   7. inside the owner's quiet hours                      -             do-not-disturb
 *   8. an out-of-office entry covering now                 away          away
 *   9. idle input for idleAfterSeconds                     -             away
 *  10. only battery, heart-rate or worn reports            -             unknown
 *  11. otherwise                                           -             available
 *
 * The place adds one more activity, after the sensed ones: travel (airport,
 * station, public transport), meal (restaurant, cafe) or working (a work
 * sphere); none while asleep.
 *
 * Anti-flapping, with the result still a pure function of the
 * (order-independent) signal set: driving is debounced over each device's
 * short motion history, starting only after in-vehicle motion lasted
 * dwell.drivingSeconds and ending only after another confident activity
 * lasted as long (a stop at a light is not the end of a drive); leaving a
 * geofence counts dwell.leaveSeconds after the leave; idle counts
 * idleAfterSeconds after the last input; location fixes less precise than
 * maxLocationAccuracyMeters are ignored.
 *
 * Place: the zone with the most recent evidence (geofence enter or a leave
 * still being confirmed, an accurate fix touching its circle, an occupied
 * or nearby room, a tagged Wi-Fi network). A newer accurate fix outside
 * every zone means the owner is elsewhere.
 */
export function derivePresence(
  signals: Iterable<Signal>,
  settings: DeriveSettings,
  now: number,
  owner: OwnerSettings = DEFAULT_OWNER_SETTINGS,
  explain = true,
): Derived {
  let validUntil = Infinity;
  const until = (instant: number) => {
    if (instant > now) validUntil = Math.min(validUntil, instant);
  };
  // Ignored kinds do not even count as a heartbeat. A device clock slightly
  // ahead (within the accepted skew) counts as now, until its time comes.
  const ignored = owner.ignore.length > 0 ? new Set<string>(owner.ignore) : undefined;
  const deviceSeen = new Map<string, number>();
  const all: Signal[] = [];
  for (const signal of signals) {
    if (ignored?.has(signal.kind)) continue;
    all.push(signal);
    if (signal.at > now) until(signal.at);
    const seen = Math.min(signal.at, now);
    const previous = deviceSeen.get(signal.deviceId);
    if (previous === undefined || seen > previous) deviceSeen.set(signal.deviceId, seen);
  }
  let lastSeen: number | undefined;
  const live = new Set<string>();
  for (const [deviceId, seen] of deviceSeen) {
    const silentAt = seen + settings.offlineAfterMs;
    if (now >= silentAt) continue;
    live.add(deviceId);
    until(silentAt);
    if (lastSeen === undefined || seen > lastSeen) lastSeen = seen;
  }
  if (lastSeen === undefined) return { state: OFFLINE_STATE, validUntil: Infinity };

  const counted = all.filter((s) => {
    if (!live.has(s.deviceId)) return false;
    const lifetime = SIGNAL_LIFETIME_MS[s.kind];
    if (lifetime === undefined) return true;
    if (now >= s.at + lifetime) return false;
    until(s.at + lifetime);
    return true;
  });
  let notWorn: Set<string> | undefined;
  for (const s of counted) if (s.event.kind === 'worn' && s.event.state === 'off') (notWorn ??= new Set()).add(s.deviceId);

  // The signals behind each condition; their keys are made only for the trace.
  const conditions = {
    asleep: [] as Signal[],
    call: [] as Signal[],
    meeting: [] as Signal[],
    driving: [] as Signal[],
    focus: [] as Signal[],
    outOfOffice: [] as Signal[],
  };
  let latestInput: Signal | undefined;
  let motionByDevice: Map<string, Signal[]> | undefined;
  for (const signal of counted) {
    const event = signal.event;
    switch (event.kind) {
      case 'sleep':
        // A watch lying on the nightstand says nothing about its owner.
        if (event.state === 'asleep' && !notWorn?.has(signal.deviceId)) conditions.asleep.push(signal);
        break;
      case 'call':
        if (event.state === 'in-call') conditions.call.push(signal);
        break;
      case 'headset':
        if (event.inCall) conditions.call.push(signal);
        break;
      case 'calendar': {
        const start = Date.parse(event.start);
        const end = Date.parse(event.end);
        if (now < start) until(start);
        else if (now < end) {
          until(end);
          if (event.state === 'busy') conditions.meeting.push(signal);
          else if (event.state === 'out-of-office') conditions.outOfOffice.push(signal);
        }
        break;
      }
      case 'motion': {
        motionByDevice ??= new Map();
        const history = motionByDevice.get(signal.deviceId) ?? [];
        history.push(signal);
        motionByDevice.set(signal.deviceId, history);
        break;
      }
      case 'focus':
        if (event.state === 'on') conditions.focus.push(signal);
        break;
      case 'user-input':
        // RFC 4480 §3.11: the most recent report across devices wins.
        // Ties broken by value, then by device: never by arrival order.
        if (
          !latestInput ||
          signal.at > latestInput.at ||
          (signal.at === latestInput.at && (signal.canonical > latestInput.canonical || (signal.canonical === latestInput.canonical && signal.deviceId < latestInput.deviceId)))
        ) {
          latestInput = signal;
        }
        break;
      default:
        break;
    }
  }

  for (const history of motionByDevice?.values() ?? []) {
    const driving = debounceDriving(history, owner, now);
    if (driving.until !== undefined) until(driving.until);
    if (driving.driving) conditions.driving.push(...driving.signals);
  }

  const trace: Record<string, TraceEntry> = {};
  const keysOf = (behind: readonly Signal[]) => behind.map(signalKey).sort();
  let userInput: UserInput | undefined;
  let idle = false;
  if (latestInput?.event.kind === 'user-input') {
    const event = latestInput.event;
    // Not after the report itself (the same device clock): a lastInput ahead
    // of `at` would hold idleness off, and be shown, as input yet to come.
    const lastInput = event.lastInput ? Math.min(Date.parse(event.lastInput), latestInput.at) : undefined;
    userInput = { state: event.state, lastInput };
    if (explain) trace.userInput = { rule: 'the most recent user-input report across devices', signals: [signalKey(latestInput)] };
    if (event.state === 'idle') {
      const idleAt = (lastInput ?? latestInput.at) + owner.idleAfterSeconds * 1000;
      if (now >= idleAt) idle = true;
      else until(idleAt);
    }
  }

  const local = owner.timeZone ? localTime(owner.timeZone, now) : undefined;
  // Quiet hours and the time offset can change only on a whole minute (every
  // UTC offset is whole minutes, DST jumps included), so with a time zone the
  // state is re-derived at the next minute: exact, and a cheap Map lookup on
  // reads in between.
  if (local) until(now - (now % 60_000) + 60_000);
  let quiet = false;
  if (local && owner.quietHours) {
    const from = minutesOf(owner.quietHours.from);
    const to = minutesOf(owner.quietHours.to);
    const m = local.minutes;
    quiet = from <= to ? m >= from && m < to : m >= from || m < to;
  }

  const activities: Activity[] = [];
  const activityRules: [Activity, Signal[], string][] = [
    ['sleeping', conditions.asleep, 'a worn wearable reports asleep'],
    ['on-the-phone', conditions.call, 'a phone or headset is in a call'],
    ['meeting', conditions.meeting, 'a busy calendar entry covers now'],
    ['steering', conditions.driving, 'confident in-vehicle motion lasting the driving dwell time'],
    ['away', conditions.outOfOffice, 'an out-of-office calendar entry covers now'],
  ];
  for (const [activity, keys, rule] of activityRules) {
    if (keys.length === 0) continue;
    activities.push(activity);
    if (explain) trace[`activity:${activity}`] = { rule, signals: keysOf(keys) };
  }

  const availabilityRules: [boolean, Availability, string, readonly Signal[]][] = [
    [conditions.asleep.length > 0, 'do-not-disturb', 'asleep', conditions.asleep],
    [conditions.call.length > 0, 'busy', 'in a call', conditions.call],
    [conditions.meeting.length > 0, 'busy', 'in a meeting', conditions.meeting],
    [conditions.driving.length > 0, 'busy', 'driving', conditions.driving],
    [conditions.focus.length > 0, 'do-not-disturb', 'focus is on', conditions.focus],
    [quiet, 'do-not-disturb', 'quiet hours', []],
    [conditions.outOfOffice.length > 0, 'away', 'out of office', conditions.outOfOffice],
    [idle, 'away', 'idle input for idleAfterSeconds', latestInput ? [latestInput] : []],
    // Only body or battery readings (a watch's heart rate, a charging phone):
    // a device is alive, but nothing says whether its owner is reachable.
    [!counted.some((s) => !SAYS_NOTHING_OF_REACHABILITY.has(s.kind)), 'unknown', 'only battery, heart-rate or worn reports', []],
  ];
  const chosen = availabilityRules.find(([holds]) => holds);
  const availability: Availability = chosen ? chosen[1] : 'available';
  if (explain) trace.availability = chosen ? { rule: chosen[2], signals: keysOf(chosen[3]) } : { rule: 'a device reported recently and nothing else applies', signals: [] };

  const place = derivePlace(counted, owner, now, until, trace, explain);
  const location = latestLocation(counted, owner);
  // Activities the place implies (RFC 4480 §3.2 travel, meal, working),
  // listed after those sensed directly; they never set the availability.
  const placeActivity: Activity | undefined = !place || conditions.asleep.length > 0
    ? undefined
    : place.placeType && travelPlaces.has(place.placeType)
      ? 'travel'
      : place.placeType && mealPlaces.has(place.placeType)
        ? 'meal'
        : place.sphere === 'work'
          ? 'working'
          : undefined;
  if (placeActivity) {
    const awayAt = activities.indexOf('away');
    activities.splice(awayAt === -1 ? activities.length : awayAt, 0, placeActivity);
    if (explain) trace[`activity:${placeActivity}`] = { rule: `implied by the place ${place?.zone ?? ''}`, signals: [...(trace.place?.signals ?? [])] };
  }

  const devices: DeviceSeen[] = [...deviceSeen.keys()].sort().map((id) => ({ id, lastSeen: deviceSeen.get(id) ?? 0, live: live.has(id) }));
  return {
    state: {
      availability,
      activities: sharedActivities(activities),
      userInput,
      place,
      location,
      timeOffsetMinutes: local?.offsetMinutes,
      lastSeen,
      devices,
      trace: explain ? trace : NO_TRACE,
    },
    validUntil,
  };
}

/**
 * Debounce over one device's motion history: the raw activity is the latest
 * confident report (from its `since`, or its time); the shown state flips
 * only when the raw state has held for the dwell. Returns whether driving
 * shows now, and when it would flip next if nothing new arrives.
 */
function debounceDriving(history: readonly Signal[], owner: OwnerSettings, now: number): { driving: boolean; until: number | undefined; signals: Signal[] } {
  const dwell = owner.dwell.drivingSeconds * 1000;
  // A total order, so the result never depends on arrival order.
  const byCanonical = (a: Signal, b: Signal) => (a.canonical < b.canonical ? -1 : a.canonical > b.canonical ? 1 : 0);
  const byTime = history.filter((s) => s.kind === 'motion').sort((a, b) => a.at - b.at || byCanonical(a, b));
  // A report's start (its `since`) is the device's claim, not after the
  // report itself, and not before the device's own latest earlier report of
  // the other state: "in a vehicle since an hour ago" sent after "still"
  // ten minutes ago starts ten minutes ago. Unbounded, a start reaching back
  // past that report sorted before it, and the older report then decided.
  const lastAt = { vehicle: -Infinity, other: -Infinity };
  const reports: { start: number; vehicle: boolean; signal: Signal }[] = [];
  for (const s of byTime) {
    const e = s.event;
    if (e.kind !== 'motion' || e.activity === 'unknown' || e.confidence < owner.minMotionConfidence) continue;
    const vehicle = e.activity === 'in-vehicle';
    const claimed = Math.min(e.since ? Date.parse(e.since) : s.at, s.at);
    reports.push({ start: Math.max(claimed, vehicle ? lastAt.other : lastAt.vehicle), vehicle, signal: s });
    if (vehicle) lastAt.vehicle = s.at;
    else lastAt.other = s.at;
  }
  reports.sort((a, b) => a.start - b.start || a.signal.at - b.signal.at || byCanonical(a.signal, b.signal));
  // Collapse consecutive reports of the same state into segments.
  const segments: { start: number; vehicle: boolean; signals: Signal[] }[] = [];
  for (const r of reports) {
    const last = segments.at(-1);
    if (last && last.vehicle === r.vehicle) last.signals.push(r.signal);
    else segments.push({ start: r.start, vehicle: r.vehicle, signals: [r.signal] });
  }
  let shown = false;
  let signals: Signal[] = [];
  let pending: number | undefined;
  segments.forEach((segment, i) => {
    const end = segments[i + 1]?.start ?? now;
    if (segment.vehicle === shown) {
      if (shown) signals = [...signals, ...segment.signals];
      return;
    }
    if (end - segment.start >= dwell) {
      shown = segment.vehicle;
      signals = shown ? [...segment.signals] : [];
    } else if (i === segments.length - 1) {
      pending = segment.start + dwell;
    }
  });
  return { driving: shown, until: pending, signals };
}

const SAYS_NOTHING_OF_REACHABILITY: ReadonlySet<string> = new Set(['battery', 'heart-rate', 'worn']);

const travelPlaces = new Set<string>(['airport', 'train-station', 'public-transport']);
const mealPlaces = new Set<string>(['restaurant', 'cafe']);

interface Evidence {
  readonly zone: Zone;
  readonly at: number;
  readonly rule: string;
  readonly key: string;
}

function derivePlace(counted: readonly Signal[], owner: OwnerSettings, now: number, until: (instant: number) => void, trace: Record<string, TraceEntry>, explain: boolean): Place | undefined {
  // Without zones there is no place: the common case costs one test.
  if (owner.zones.length === 0) {
    const fix = explain ? latestAccurateFixOf(counted, owner) : undefined;
    if (fix) trace.place = { rule: 'the newest accurate location fix is outside every zone', signals: [signalKey(fix)] };
    return undefined;
  }
  const evidence: Evidence[] = [];
  const confirmedLeave = new Map<string, number>();
  let latestAccurateFix: Signal | undefined;
  for (const signal of counted) {
    const event = signal.event;
    // Made only for a signal that is evidence (most are not).
    let made: string | undefined;
    const key = () => (made ??= signalKey(signal));
    switch (event.kind) {
      case 'geofence':
        for (const zone of owner.zones) {
          if (!(zone.geofences ?? [zone.name]).includes(event.zone)) continue;
          if (event.transition === 'enter') evidence.push({ zone, at: signal.at, rule: `geofence ${event.zone} entered`, key: key() });
          else {
            // A leave is confirmed only after the dwell; until then, still there.
            const confirmedAt = signal.at + owner.dwell.leaveSeconds * 1000;
            if (now < confirmedAt) {
              evidence.push({ zone, at: signal.at, rule: `geofence ${event.zone} left, not yet confirmed`, key: key() });
              until(confirmedAt);
            } else {
              confirmedLeave.set(zone.name, Math.max(confirmedLeave.get(zone.name) ?? -Infinity, signal.at));
            }
          }
        }
        break;
      case 'location':
        if (event.accuracy > owner.maxLocationAccuracyMeters) break;
        if (newerFix(signal, latestAccurateFix)) latestAccurateFix = signal;
        for (const zone of owner.zones) {
          if (zone.circle && distanceMeters(event.latitude, event.longitude, zone.circle.latitude, zone.circle.longitude) - event.accuracy <= zone.circle.radiusMeters) {
            evidence.push({ zone, at: signal.at, rule: 'an accurate location fix touches the zone', key: key() });
          }
        }
        break;
      case 'occupancy':
        if (!event.occupied) break;
        for (const zone of owner.zones) if (zone.rooms?.includes(event.room)) evidence.push({ zone, at: signal.at, rule: `room ${event.room} occupied`, key: key() });
        break;
      case 'ble-room':
        if (event.distance > owner.maxBleDistanceMeters) break;
        for (const zone of owner.zones) if (zone.rooms?.includes(event.room)) evidence.push({ zone, at: signal.at, rule: `seen in room ${event.room}`, key: key() });
        break;
      case 'network':
        if (event.connection !== 'wifi' || !event.network) break;
        for (const zone of owner.zones) if (zone.networks?.includes(event.network)) evidence.push({ zone, at: signal.at, rule: 'on a Wi-Fi network tagged for the zone', key: key() });
        break;
      default:
        break;
    }
  }
  // A confirmed leave outweighs everything older for that zone (an old fix,
  // a stale Wi-Fi): only evidence newer than the leave can put the owner back.
  let best: Evidence | undefined;
  for (const e of evidence) {
    const left = confirmedLeave.get(e.zone.name);
    if (left !== undefined && e.at <= left) continue;
    // Newest first; ties broken by signal key, then zone name: never by arrival order.
    if (!best || e.at > best.at || (e.at === best.at && (e.key < best.key || (e.key === best.key && e.zone.name < best.zone.name)))) best = e;
  }
  if (latestAccurateFix && (!best || latestAccurateFix.at > best.at) && !evidence.some((e) => e.key === signalKey(latestAccurateFix as Signal))) {
    if (explain) trace.place = { rule: 'the newest accurate location fix is outside every zone', signals: [signalKey(latestAccurateFix)] };
    return undefined;
  }
  if (!best) return undefined;
  if (explain) trace.place = { rule: best.rule, signals: [best.key] };
  return { zone: best.zone.name, placeType: best.zone.placeType, sphere: best.zone.sphere };
}

/** Newest first; a tie on time broken by signal key, never by arrival order (order independence). */
function newerFix(candidate: Signal, current: Signal | undefined): boolean {
  if (!current) return true;
  return candidate.at > current.at || (candidate.at === current.at && signalKey(candidate) < signalKey(current));
}

function latestAccurateFixOf(counted: readonly Signal[], owner: OwnerSettings): Signal | undefined {
  let latest: Signal | undefined;
  for (const signal of counted) {
    if (signal.event.kind === 'location' && signal.event.accuracy <= owner.maxLocationAccuracyMeters && newerFix(signal, latest)) latest = signal;
  }
  return latest;
}

/** The newest fix precise enough to count (maxLocationAccuracyMeters). */
function latestLocation(counted: readonly Signal[], owner: OwnerSettings): Location | undefined {
  const latest = latestAccurateFixOf(counted, owner);
  if (latest?.event.kind !== 'location') return undefined;
  return { latitude: latest.event.latitude, longitude: latest.event.longitude, accuracy: latest.event.accuracy, deviceId: latest.deviceId };
}

/** Haversine distance on a spherical Earth (mean radius 6,371,008.8 m). */
export function distanceMeters(lat1: number, lon1: number, lat2: number, lon2: number): number {
  const rad = Math.PI / 180;
  const dLat = (lat2 - lat1) * rad;
  const dLon = (lon2 - lon1) * rad;
  const a = Math.sin(dLat / 2) ** 2 + Math.cos(lat1 * rad) * Math.cos(lat2 * rad) * Math.sin(dLon / 2) ** 2;
  return 2 * 6_371_008.8 * Math.asin(Math.min(1, Math.sqrt(a)));
}

/** Minutes since midnight of an `HH:MM` wall-clock time (quiet hours, recurring consent windows). */
export function minutesOf(hhmm: string): number {
  const [h, m] = hhmm.split(':').map(Number);
  return (h ?? 0) * 60 + (m ?? 0);
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Local wall-clock minutes and the UTC offset in a time zone, at `now`. */
export function localTime(timeZone: string, now: number): { minutes: number; offsetMinutes: number } {
  let format = formatters.get(timeZone);
  if (!format) {
    format = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: 'numeric',
      day: 'numeric',
      hour: 'numeric',
      minute: 'numeric',
      second: 'numeric',
    });
    formatters.set(timeZone, format);
  }
  const parts: Record<string, number> = {};
  for (const part of format.formatToParts(new Date(now))) if (part.type !== 'literal') parts[part.type] = Number(part.value);
  const get = (type: string) => parts[type] ?? 0;
  const asUtc = Date.UTC(get('year'), get('month') - 1, get('day'), get('hour'), get('minute'), get('second'));
  return { minutes: get('hour') * 60 + get('minute'), offsetMinutes: Math.round((asUtc - (now - (now % 1000))) / 60_000) };
}
