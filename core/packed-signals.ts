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
 * Packing is lossless or it does not happen: pack() decodes what it encoded
 * and compares the canonical JSON of every event (the merge's tie-breaker,
 * and what storage and exports hold) with the original; anything that does
 * not come back identical (a time with sub-millisecond digits, a field the
 * layout does not know) leaves the set unpacked. The layouts below list
 * every field of every event kind in the schema's order (checked against
 * the zod schemas by tests/unit/packed-signals.test.ts), so a decoded
 * event's properties come in the same order as a parsed one's.
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
// shape byte (fraction digits 0-3, Z or the offset's sign), the instant as
// a float64 (ms; exact for every date the schema allows) and, with an
// offset, its minutes in two bytes. Four fraction digits or more are not
// packed (Date.parse drops them, so they would not come back).

const SHAPE_Z = 4;
const SHAPE_MINUS = 8;

const float = new Float64Array(1);
const floatBytes = new Uint8Array(float.buffer);

class Writer {
  private buffer = Buffer.allocUnsafe(256);
  length = 0;

  reset(): void {
    this.length = 0;
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

  /** UTF-8, with a two-byte length (labels are at most 64 characters). */
  text(value: string): boolean {
    const bytes = Buffer.byteLength(value, 'utf8');
    if (bytes > 0xffff) return false;
    this.room(2 + bytes);
    this.buffer[this.length++] = bytes >> 8;
    this.buffer[this.length++] = bytes & 0xff;
    this.length += this.buffer.write(value, this.length, 'utf8');
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

  text(): string {
    const length = (this.bytes.charCodeAt(this.at) << 8) | this.bytes.charCodeAt(this.at + 1);
    const start = this.at + 2;
    this.at = start + length;
    return Buffer.from(this.bytes.slice(start, this.at), 'latin1').toString('utf8');
  }
}

const writer = new Writer();

/** Writes an RFC 3339 time; false when it cannot be packed. */
function writeTime(value: string): boolean {
  const ms = Date.parse(value);
  if (!Number.isFinite(ms) || value.length < 20) return false;
  const dot = value.charCodeAt(19) === 46; // '.'
  let end = 19;
  if (dot) {
    end = 20;
    while (end < value.length && value.charCodeAt(end) >= 48 && value.charCodeAt(end) <= 57) end += 1;
  }
  const digits = dot ? end - 20 : 0;
  if (digits > 3 || (dot && digits === 0)) return false;
  const zone = value.slice(end);
  if (zone === 'Z') {
    writer.byte(digits | SHAPE_Z);
    writer.float(ms);
    return true;
  }
  if (zone.length !== 6) return false;
  const minutes = Number(zone.slice(1, 3)) * 60 + Number(zone.slice(4, 6));
  if (!Number.isInteger(minutes)) return false;
  writer.byte(digits | (zone[0] === '-' ? SHAPE_MINUS : 0));
  writer.float(ms);
  writer.byte(minutes >> 8);
  writer.byte(minutes & 0xff);
  return true;
}

const two = (n: number) => (n < 10 ? `0${n}` : String(n));

function readTime(reader: Reader): { text: string; ms: number } {
  const shape = reader.byte();
  const ms = reader.float();
  const digits = shape & 3;
  if (shape & SHAPE_Z) {
    const iso = new Date(ms).toISOString();
    return { text: `${iso.slice(0, digits > 0 ? 20 + digits : 19)}Z`, ms };
  }
  const minutes = (reader.byte() << 8) | reader.byte();
  const sign = shape & SHAPE_MINUS ? -1 : 1;
  // The wall-clock time at that offset, written as if it were UTC.
  const iso = new Date(ms + sign * minutes * 60_000).toISOString();
  return { text: `${iso.slice(0, digits > 0 ? 20 + digits : 19)}${sign < 0 ? '-' : '+'}${two(Math.floor(minutes / 60))}:${two(minutes % 60)}`, ms };
}

// --- events ----------------------------------------------------------------

function writeEvent(event: SensorEvent): boolean {
  const kind = KIND_INDEX.get(event.kind);
  if (kind === undefined) return false;
  writer.byte(kind);
  const fields = event as unknown as Readonly<Record<string, unknown>>;
  for (const [field, type] of LAYOUTS[event.kind]) {
    const value = fields[field];
    switch (type.type) {
      case 'time':
        if (type.optional) {
          writer.byte(value === undefined ? 0 : 1);
          if (value === undefined) break;
        }
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
        if (typeof value !== 'number') return false;
        writer.float(value);
        break;
      case 'text':
        if (type.optional) {
          writer.byte(value === undefined ? 0 : 1);
          if (value === undefined) break;
        }
        if (typeof value !== 'string' || !writer.text(value)) return false;
        break;
    }
  }
  return true;
}

function readEvent(reader: Reader): { event: SensorEvent; at: number } {
  const kind = KINDS[reader.byte()] as SensorEvent['kind'];
  const event: Record<string, unknown> = { kind };
  let at = NaN;
  for (const [field, type] of LAYOUTS[kind]) {
    switch (type.type) {
      case 'time': {
        if (type.optional && reader.byte() === 0) break;
        const { text: value, ms } = readTime(reader);
        if (field === 'at') at = ms;
        event[field] = value;
        break;
      }
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
  return { event: event as unknown as SensorEvent, at };
}

/** Decodes packed signals (in the order they were packed). */
export function unpackSignals(packed: PackedSignals): UnpackedSignal[] {
  const devices = packed.devices;
  const reader = new Reader(packed.bytes);
  const out: UnpackedSignal[] = [];
  while (!reader.done) {
    const device = reader.byte();
    const deviceId = typeof devices === 'string' ? devices : (devices[device] as string);
    const { event, at } = readEvent(reader);
    out.push({ deviceId, event, at });
  }
  return out;
}

/**
 * Packs signals, or returns undefined when any would not come back exactly
 * as it is (see the module comment) or there are more than 255 devices.
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
  const packed: PackedSignals = { bytes: writer.finish(), devices: devices.length === 1 ? (devices[0] as string) : devices };
  const back = unpackSignals(packed);
  for (let i = 0; i < signals.length; i++) {
    const original = signals[i] as { readonly deviceId: string; readonly event: SensorEvent };
    const decoded = back[i] as UnpackedSignal;
    if (decoded.deviceId !== original.deviceId || JSON.stringify(decoded.event) !== JSON.stringify(original.event)) return undefined;
  }
  return packed;
}
