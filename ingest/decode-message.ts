import type { IngestRejection } from '../core/errors.js';
import { sensorMessageSchema, type SensorEvent } from '../core/events.js';

/**
 * Payload -> validated events, or the reason it was refused. All or nothing:
 * one bad event refuses the whole message, so a message is never half-applied.
 */
export interface DecodeLimits {
  readonly maxBytes: number;
  readonly maxClockSkewMs: number;
}

export type Decoded = { ok: true; events: SensorEvent[] } | { ok: false; reason: IngestRejection };

export function decodeMessage(payload: Uint8Array, limits: DecodeLimits, now: number): Decoded {
  if (payload.byteLength > limits.maxBytes) return { ok: false, reason: 'payload_too_large' };
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch {
    return { ok: false, reason: 'malformed_json' };
  }
  const parsed = sensorMessageSchema.safeParse(json);
  if (!parsed.success) return { ok: false, reason: 'invalid_event' };
  const latest = now + limits.maxClockSkewMs;
  for (const event of parsed.data) {
    if (Date.parse(event.at) > latest) return { ok: false, reason: 'clock_skew' };
  }
  return { ok: true, events: parsed.data };
}
