import type { IngestRejection } from '../core/errors.js';

/**
 * A refused message as republished on the dead-letter topic
 * (`{MQTT_DEAD_LETTER_TOPIC}/{reason}`, QoS 0, not retained), for operators
 * debugging a device. It carries the refused payload itself (base64), which
 * may hold personal data: the option is off by default, and the topic
 * should be readable by operators only.
 */
export function deadLetter(root: string, topic: string, payload: Uint8Array, reason: IngestRejection, now: number): { topic: string; payload: string } {
  return {
    topic: `${root}/${reason}`,
    payload: JSON.stringify({ reason, topic, receivedAt: new Date(now).toISOString(), payload: Buffer.from(payload).toString('base64') }),
  };
}
