import type { IngestRejection } from '../core/errors.js';

/**
 * A refused message as republished on the dead-letter topic
 * (`{MQTT_DEAD_LETTER_TOPIC}/{reason}`, QoS 0, not retained), for operators
 * debugging a device. It says which topic, why, when, how large, and which
 * top-level fields the payload had; never the payload itself, which may
 * carry a position or a Wi-Fi name. Messages on topics that name no
 * registered device (someone else's OwnTracks on a shared broker) and
 * messages over a device's rate limit are not dead-lettered at all.
 */
export function deadLetter(
  root: string,
  topic: string,
  payload: Uint8Array,
  reason: IngestRejection,
  now: number,
): { topic: string; payload: string } | undefined {
  if (reason === 'bad_topic' || reason === 'unknown_device') return undefined;
  // A flooding device's excess is counted, not republished: a dead letter
  // each would hand the flood back to the broker (and parse every payload).
  if (reason === 'rate_limited') return undefined;
  let fields: string[] | undefined;
  if (reason !== 'payload_too_large' && reason !== 'malformed_json') {
    try {
      const json: unknown = JSON.parse(Buffer.from(payload).toString('utf8'));
      if (json && typeof json === 'object' && !Array.isArray(json)) fields = Object.keys(json).slice(0, 32).map((k) => k.slice(0, 64));
    } catch {
      fields = undefined;
    }
  }
  return {
    topic: `${root}/${reason}`,
    payload: JSON.stringify({ reason, topic, receivedAt: new Date(now).toISOString(), bytes: payload.byteLength, ...(fields ? { fields } : {}) }),
  };
}
