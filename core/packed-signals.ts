import type { SensorEvent } from './events.js';

/**
 * An owner's signals at rest, as one compact string (issue 6: "resident
 * memory per owner with state ... target at most 1 KB each").
 *
 * Held as objects, an owner's five signals cost about 1 KB of heap: a record
 * and an event object each, an RFC 3339 string per time field (~44 bytes
 * each), a boxed number per time. Packed, they are one one-byte string of a
 * few bytes per field, plus the list of the owner's device ids (the
 * directory's own strings, shared). The hub packs owners that have been
 * idle for a while and unpacks one when it changes again (core/signal-store.ts
 * SignalSet), so ingest works on objects and only owners at rest are packed.
 *
 * Packing is lossless or it does not happen: every event must come back
 * with the same canonical JSON (the merge's tie-breaker, and what storage
 * and exports hold). The layouts below list every field of every event
 * kind in the schema's order (checked against the zod schemas by
 * tests/unit/packed-signals.test.ts), and packing refuses what they would
 * not give back as it was: a property they do not list or list in another
 * order, a time that does not format back to the same text (sub-millisecond
 * digits), text with a lone surrogate. The property test there checks the
 * round trip over generated events of every kind.
 *
 * Both ways are on the hot path of an owner waking up (an event or a read
 * after a rest) and of the sweeps, so times are formatted with integer
 * arithmetic rather than Date, and ASCII text is copied as it is
 * (measured: see the README, "Memory").
 */

type FieldType =
  | { readonly type: 'time'; readonly optional: boolean }
  | { readonly type: 'enum'; readonly values: readonly string[] }
  | { readonly type: 'bool' }
  /** An integer 0..255 (confidence, battery level, heart rate). */
  | { readonly type: 'byte' }
  | { readonly type: 'number' }
  | { readonly type: 'text'; readonly optional: boolean };

type Layout = readonly (readonly [field: string, type: FieldType])[];

const time: FieldType = { type: 'time', optional: false };
const optionalTime: FieldType = { type: 'time', optional: true };
const bool: FieldType = { type: 'bool' };
const byte: FieldType = { type: 'byte' };
const number: FieldType = { type: 'number' };
const text: FieldType = { type: 'text', optional: false };
const optionalText: FieldType = { type: 'text', optional: true };
const oneOf = (...values: string[]): FieldType => ({ type: 'enum', values });
const ON_OFF = oneOf('on', 'off');

/** Every kind's fields after `kind`, in the order of core/events.ts. */
export const LAYOUTS: Readonly<Record<SensorEvent['kind'], Layout>> = {
  motion: [
    ['at', time],
    ['activity', oneOf('still', 'walking', 'running', 'cycling', 'in-vehicle', 'unknown')],
    ['confidence', byte],
    ['since', optionalTime],
  ],
  'user-input': [
    ['at', time],
    ['state', oneOf('active', 'idle')],
    ['lastInput', optionalTime],
  ],
  screen: [
    ['at', time],
    ['state', ON_OFF],
    ['locked', bool],
  ],
  call: [
    ['at', time],
    ['state', oneOf('idle', 'ringing', 'in-call')],
  ],
  calendar: [
    ['at', time],
    ['state', oneOf('busy', 'free', 'tentative', 'out-of-office')],
    ['start', time],
    ['end', time],
  ],
  focus: [
    ['at', time],
    ['state', ON_OFF],
  ],
  battery: [
    ['at', time],
    ['level', byte],
    ['charging', bool],
  ],
  network: [
    ['at', time],
    ['connection', oneOf('wifi', 'cellular', 'offline')],
    ['ssid', optionalText],
    ['network', optionalText],
  ],
  geofence: [
    ['at', time],
    ['zone', text],
    ['transition', oneOf('enter', 'leave')],
  ],
  location: [
    ['at', time],
    ['latitude', number],
    ['longitude', number],
    ['accuracy', number],
  ],
  sleep: [
    ['at', time],
    ['state', oneOf('asleep', 'awake')],
  ],
  worn: [
    ['at', time],
    ['state', ON_OFF],
  ],
  'heart-rate': [
    ['at', time],
    ['bpm', byte],
  ],
  occupancy: [
    ['at', time],
    ['room', text],
    ['occupied', bool],
  ],
  'ble-room': [
    ['at', time],
    ['id', text],
    ['room', text],
    ['distance', number],
  ],
  headset: [
    ['at', time],
    ['onHead', bool],
    ['inCall', bool],
    ['muted', bool],
  ],
};

const KINDS = Object.keys(LAYOUTS) as SensorEvent['kind'][];
const KIND_INDEX = new Map(KINDS.map((kind, i) => [kind, i]));

/** What one packed signal decodes to: the device, the event and its time in ms (no second Date.parse). */
export interface UnpackedSignal {
  readonly deviceId: string;
  readonly event: SensorEvent;
  readonly at: number;
}

/** An owner's signals packed: the bytes, and the device ids they index. */
export interface PackedSignals {
  readonly bytes: string;
  /** One device's id as is (the usual case: no array), or the list. */
  readonly devices: string | readonly string[];
}

// --- times -----------------------------------------------------------------
//
// An RFC 3339 date-time as zod's z.iso.datetime({ offset: true }) accepts it:
// YYYY-MM-DDTHH:MM:SS, optional fraction, then Z or ±HH:MM. Packed as a
// shape byte (fraction digits 0-3, Z or the offset's sign), the instant
// and, with an offset, its minutes in two bytes. The instant (whole ms) is
// the difference from the time packed before it, as a variable-length
// integer: an owner's times lie within seconds or minutes of each other, so
// one to four bytes instead of eight (measured: 128 -> 96 bytes held for
// the five signals of bench/memory.ts). The first time of a set, or one
// further than MAX_DELTA_MS from the one before, is a float64 (exact for
// every date the schema allows). A time that does not format back to the
// same text (four fraction digits or more: Date.parse drops them) is not
// packed.

const SHAPE_Z = 4;
const SHAPE_MINUS = 8;
/** The instant is a difference from the time before (a zigzag varint), not a float64. */
const SHAPE_DELTA = 16;
/** About 34 years: the zigzag of any difference within it has at most six 7-bit groups. */
const MAX_DELTA_MS = 2 ** 40;
const DAY_MS = 86_400_000;

const TWO_DIGITS = Array.from({ length: 100 }, (_, i) => String(i).padStart(2, '0'));
const THREE_DIGITS = Array.from({ length: 1000 }, (_, i) => String(i).padStart(3, '0'));

/** The last day formatted, "YYYY-MM-DDT": times of one owner mostly fall on one day. */
let cachedDay = NaN;
let cachedDate = '';

/** "YYYY-MM-DDT" of a day number (days since 1970-01-01), by H. Hinnant's civil_from_days. */
function dateOf(days: number): string {
  if (days === cachedDay) return cachedDate;
  const z = days + 719_468;
  const era = Math.floor(z / 146_097);
  const doe = z - era * 146_097;
  const yoe = Math.floor((doe - Math.floor(doe / 1460) + Math.floor(doe / 36_524) - Math.floor(doe / 146_096)) / 365);
  const doy = doe - (365 * yoe + Math.floor(yoe / 4) - Math.floor(yoe / 100));
  const mp = Math.floor((5 * doy + 2) / 153);
  const day = doy - Math.floor((153 * mp + 2) / 5) + 1;
  const month = mp < 10 ? mp + 3 : mp - 9;
  const year = yoe + era * 400 + (month <= 2 ? 1 : 0);
  cachedDay = days;
  cachedDate = `${TWO_DIGITS[Math.floor(year / 100)]}${TWO_DIGITS[year % 100]}-${TWO_DIGITS[month]}-${TWO_DIGITS[day]}T`;
  return cachedDate;
}

/** The RFC 3339 text of an instant with the given shape (and offset in minutes). */
function formatTime(ms: number, shape: number, minutes: number): string {
  const sign = shape & SHAPE_MINUS ? -1 : 1;
  const wall = ms + sign * minutes * 60_000;
  const days = Math.floor(wall / DAY_MS);
  let rest = wall - days * DAY_MS;
  const hours = Math.floor(rest / 3_600_000);
  rest -= hours * 3_600_000;
  const mins = Math.floor(rest / 60_000);
  rest -= mins * 60_000;
  const seconds = Math.floor(rest / 1000);
  const digits = shape & 3;
  const fraction = digits === 0 ? '' : `.${(THREE_DIGITS[rest - seconds * 1000] as string).slice(0, digits)}`;
  const zone = shape & SHAPE_Z ? 'Z' : `${sign < 0 ? '-' : '+'}${TWO_DIGITS[Math.floor(minutes / 60)]}:${TWO_DIGITS[minutes % 60]}`;
  return `${dateOf(days)}${TWO_DIGITS[hours]}:${TWO_DIGITS[mins]}:${TWO_DIGITS[seconds]}${fraction}${zone}`;
}

const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);
/** Text longer than this many UTF-8 bytes is not packed (labels are at most 64 characters). */
const MAX_TEXT_BYTES = 0x7fff;
const UTF8_FLAG = 0x8000;

class Writer {
  private buffer = Buffer.allocUnsafe(256);
  length = 0;
  /** The instant of the time written last in this set (ms), or NaN. */
  lastMs = NaN;

  reset(): void {
    this.length = 0;
    this.lastMs = NaN;
  }

  private room(n: number): void {
    if (this.length + n <= this.buffer.length) return;
    const bigger = Buffer.allocUnsafe(Math.max(this.buffer.length * 2, this.length + n));
    this.buffer.copy(bigger, 0, 0, this.length);
    this.buffer = bigger;
  }

  byte(value: number): void {
    this.room(1);
    this.buffer[this.length++] = value;
  }

  float(value: number): void {
    this.room(8);
    float[0] = value;
    for (let i = 0; i < 8; i++) this.buffer[this.length++] = floatBytes[i] as number;
  }

  /** A signed integer of at most MAX_DELTA_MS, zigzagged, in 7-bit groups (arithmetic, not bitwise: it exceeds 32 bits). */
  delta(value: number): void {
    let rest = value >= 0 ? value * 2 : -value * 2 - 1;
    this.room(7);
    while (rest >= 128) {
      this.buffer[this.length++] = (rest % 128) + 128;
      rest = Math.floor(rest / 128);
    }
    this.buffer[this.length++] = rest;
  }

  /**
   * A two-byte length, then the text: ASCII as it is (read back by slicing
   * the packed string), anything else as UTF-8 (flagged in the length).
   * False for text that would not come back the same (a lone surrogate).
   */
  text(value: string): boolean {
    let ascii = true;
    for (let i = 0; i < value.length; i++) {
      if (value.charCodeAt(i) >= 0x80) {
        ascii = false;
        break;
      }
    }
    if (ascii) {
      if (value.length > MAX_TEXT_BYTES) return false;
      this.room(2 + value.length);
      this.buffer[this.length++] = value.length >> 8;
      this.buffer[this.length++] = value.length & 0xff;
      this.length += this.buffer.write(value, this.length, 'latin1');
      return true;
    }
    const bytes = Buffer.from(value, 'utf8');
    if (bytes.length > MAX_TEXT_BYTES || bytes.toString('utf8') !== value) return false;
    this.room(2 + bytes.length);
    this.buffer[this.length++] = (bytes.length | UTF8_FLAG) >> 8;
    this.buffer[this.length++] = bytes.length & 0xff;
    this.length += bytes.copy(this.buffer, this.length);
    return true;
  }

  /** A flat one-byte string of what was written. */
  finish(): string {
    return this.buffer.toString('latin1', 0, this.length);
  }
}

class Reader {
  at = 0;
  constructor(private readonly bytes: string) {}

  get done(): boolean {
    return this.at >= this.bytes.length;
  }

  byte(): number {
    return this.bytes.charCodeAt(this.at++);
  }

  float(): number {
    for (let i = 0; i < 8; i++) floatBytes[i] = this.bytes.charCodeAt(this.at++);
    return float[0] as number;
  }

  delta(): number {
    let rest = 0;
    let scale = 1;
    for (;;) {
      const group = this.byte();
      rest += (group & 127) * scale;
      if (group < 128) break;
      scale *= 128;
    }
    return rest % 2 === 0 ? rest / 2 : -(rest + 1) / 2;
  }

  text(): string {
    const header = (this.bytes.charCodeAt(this.at) << 8) | this.bytes.charCodeAt(this.at + 1);
    const length = header & MAX_TEXT_BYTES;
    const start = this.at + 2;
    this.at = start + length;
    const raw = this.bytes.slice(start, this.at);
    return header & UTF8_FLAG ? Buffer.from(raw, 'latin1').toString('utf8') : raw;
  }

  /** A time; its instant in ms is left in `lastMs` (the event's own time needs no second Date.parse). */
  time(): string {
    const shape = this.byte();
    const ms = shape & SHAPE_DELTA ? this.lastMs + this.delta() : this.float();
    this.lastMs = ms;
    const minutes = shape & SHAPE_Z ? 0 : (this.byte() << 8) | this.byte();
    return formatTime(ms, shape, minutes);
  }

  lastMs = NaN;
  /** The `at` of the event read last, in ms. */
  eventAt = NaN;
}

const writer = new Writer();

/** Writes an RFC 3339 time; false when it would not format back to the same text. */
function writeTime(value: string): boolean {
  const ms = Date.parse(value);
  if (!Number.isFinite(ms) || value.length < 20) return false;
  let digits = 0;
  if (value.charCodeAt(19) === 46) {
    // '.': count the fraction's digits.
    while (20 + digits < value.length && value.charCodeAt(20 + digits) >= 48 && value.charCodeAt(20 + digits) <= 57) digits += 1;
    if (digits === 0 || digits > 3) return false;
  }
  const zoneAt = digits === 0 ? 19 : 20 + digits;
  let shape = digits;
  let minutes = 0;
  if (value.length === zoneAt + 1) shape |= SHAPE_Z;
  else if (value.length === zoneAt + 6) {
    minutes = Number(value.slice(zoneAt + 1, zoneAt + 3)) * 60 + Number(value.slice(zoneAt + 4, zoneAt + 6));
    if (!Number.isInteger(minutes) || minutes < 0 || minutes >= 24 * 60) return false;
    if (value.charCodeAt(zoneAt) === 45) shape |= SHAPE_MINUS; // '-'
  } else return false;
  if (formatTime(ms, shape, minutes) !== value) return false;
  const delta = ms - writer.lastMs;
  if (Math.abs(delta) <= MAX_DELTA_MS) {
    writer.byte(shape | SHAPE_DELTA);
    writer.delta(delta);
  } else {
    // The first time of the set (delta NaN), or one far from the one before.
    writer.byte(shape);
    writer.float(ms);
  }
  writer.lastMs = ms;
  if (!(shape & SHAPE_Z)) {
    writer.byte(minutes >> 8);
    writer.byte(minutes & 0xff);
  }
  return true;
}

// --- events ----------------------------------------------------------------

/** Writes one event; false when it would not come back exactly as it is (see the module comment). */
function writeEvent(event: SensorEvent): boolean {
  const kind = KIND_INDEX.get(event.kind);
  if (kind === undefined) return false;
  const keys = Object.keys(event);
  if (keys[0] !== 'kind') return false;
  let next = 1;
  writer.byte(kind);
  const fields = event as unknown as Readonly<Record<string, unknown>>;
  for (const [field, type] of LAYOUTS[event.kind]) {
    const value = fields[field];
    const optional = (type.type === 'time' || type.type === 'text') && type.optional;
    if (value === undefined) {
      if (!optional) return false;
      writer.byte(0);
      continue;
    }
    // The same properties in the same order, or the canonical JSON would differ.
    if (keys[next++] !== field) return false;
    if (optional) writer.byte(1);
    switch (type.type) {
      case 'time':
        if (typeof value !== 'string' || !writeTime(value)) return false;
        break;
      case 'enum': {
        const index = typeof value === 'string' ? type.values.indexOf(value) : -1;
        if (index < 0) return false;
        writer.byte(index);
        break;
      }
      case 'bool':
        if (typeof value !== 'boolean') return false;
        writer.byte(value ? 1 : 0);
        break;
      case 'byte':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 255) return false;
        writer.byte(value);
        break;
      case 'number':
        if (typeof value !== 'number' || !Number.isFinite(value)) return false;
        writer.float(value);
        break;
      case 'text':
        if (typeof value !== 'string' || !writer.text(value)) return false;
        break;
    }
  }
  return next === keys.length;
}

/** Reads one event; its time in ms is left in `reader.eventAt`. */
function readEvent(reader: Reader): SensorEvent {
  const kind = KINDS[reader.byte()] as SensorEvent['kind'];
  const event: Record<string, unknown> = { kind };
  for (const [field, type] of LAYOUTS[kind]) {
    switch (type.type) {
      case 'time':
        if (type.optional && reader.byte() === 0) break;
        event[field] = reader.time();
        if (field === 'at') reader.eventAt = reader.lastMs;
        break;
      case 'enum':
        event[field] = type.values[reader.byte()];
        break;
      case 'bool':
        event[field] = reader.byte() === 1;
        break;
      case 'byte':
        event[field] = reader.byte();
        break;
      case 'number':
        event[field] = reader.float();
        break;
      case 'text':
        if (type.optional && reader.byte() === 0) break;
        event[field] = reader.text();
        break;
    }
  }
  return event as unknown as SensorEvent;
}

const unpacked = (deviceId: string, event: SensorEvent, at: number): UnpackedSignal => ({ deviceId, event, at });

/**
 * Decodes packed signals (in the order they were packed), each made by
 * `make` (core/signal-store.ts makes its own records, with no object in
 * between).
 */
export function unpackSignals(packed: PackedSignals): UnpackedSignal[];
export function unpackSignals<T>(packed: PackedSignals, make: (deviceId: string, event: SensorEvent, at: number) => T): T[];
export function unpackSignals<T>(packed: PackedSignals, make?: (deviceId: string, event: SensorEvent, at: number) => T): (T | UnpackedSignal)[] {
  const build = make ?? unpacked;
  const devices = packed.devices;
  const reader = new Reader(packed.bytes);
  const out: (T | UnpackedSignal)[] = [];
  while (!reader.done) {
    const device = reader.byte();
    const deviceId = typeof devices === 'string' ? devices : (devices[device] as string);
    const event = readEvent(reader);
    out.push(build(deviceId, event, reader.eventAt));
  }
  return out;
}

/**
 * Packs signals, or returns undefined when any would not come back exactly
 * as it is (see the module comment) or they come from more than 256 devices.
 */
export function packSignals(signals: readonly { readonly deviceId: string; readonly event: SensorEvent }[]): PackedSignals | undefined {
  if (signals.length === 0) return undefined;
  const devices: string[] = [];
  writer.reset();
  for (const signal of signals) {
    let device = devices.indexOf(signal.deviceId);
    if (device < 0) device = devices.push(signal.deviceId) - 1;
    if (device > 255) return undefined;
    writer.byte(device);
    if (!writeEvent(signal.event)) return undefined;
  }
  // slice(): an array grown by push keeps room for 17 elements (V8's
  // growth step from empty), 152 bytes of backing store where two device
  // ids need 32 (measured in heap snapshots of bench/memory.ts); the copy
  // is exactly as long as the list, and is what stays held at rest.
  return { bytes: writer.finish(), devices: devices.length === 1 ? (devices[0] as string) : devices.slice() };
}
