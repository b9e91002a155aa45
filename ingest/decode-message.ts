import { isUtf8 } from 'node:buffer';
import { z } from 'zod';
import type { IngestRejection } from '../core/errors.js';
import { sensorEventSchema, sensorMessageSchema, type SensorEvent } from '../core/events.js';
import { ownTracksMessageSchema, ownTracksToEvents } from './owntracks.js';
import type { TopicFormat } from './topics.js';

/**
 * Payload -> validated events, or the reason it was refused. All or nothing:
 * one bad event refuses the whole message, so a message is never half-applied.
 * An OwnTracks message the service has no use for decodes to no events.
 */
export interface DecodeLimits {
  readonly maxBytes: number;
  readonly maxClockSkewMs: number;
}

export type Decoded = { ok: true; events: SensorEvent[] } | { ok: false; reason: IngestRejection };

const eventsSchema = z.array(sensorEventSchema);

function toEvents(json: unknown, format: TopicFormat): SensorEvent[] | undefined {
  if (format === 'native') {
    const parsed = sensorMessageSchema.safeParse(json);
    return parsed.success ? parsed.data : undefined;
  }
  const message = ownTracksMessageSchema.safeParse(json);
  if (!message.success) return undefined;
  // The mapped events pass the same contract as native ones.
  const events = eventsSchema.safeParse(ownTracksToEvents(message.data));
  return events.success ? events.data : undefined;
}

export function decodeMessage(payload: Uint8Array, limits: DecodeLimits, now: number, format: TopicFormat = 'native'): Decoded {
  if (payload.byteLength > limits.maxBytes) return { ok: false, reason: 'payload_too_large' };
  // RFC 8259 §8.1: JSON between systems is UTF-8. Decoding anything else
  // would turn each invalid byte into U+FFFD, and two different Latin-1
  // Wi-Fi names into one (and one network digest).
  if (!isUtf8(payload)) return { ok: false, reason: 'malformed_json' };
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed_json' };
  }
  const events = toEvents(json, format);
  if (!events) return { ok: false, reason: 'invalid_event' };
  const latest = now + limits.maxClockSkewMs;
  for (const event of events) {
    if (Date.parse(event.at) > latest) return { ok: false, reason: 'clock_skew' };
  }
  return { ok: true, events };
}
