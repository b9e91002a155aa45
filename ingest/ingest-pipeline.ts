import type { Directory } from '../core/directory.js';
import { sanitizeEvent, type SensorEvent } from '../core/events.js';
import { ingestRejections, type IngestRejection } from '../core/errors.js';
import type { Log } from '../core/log.js';
import type { Metrics } from '../core/metrics.js';
import type { PresenceHub } from '../core/presence-hub.js';
import { decodeMessage, type DecodeLimits } from './decode-message.js';
import { parseTopic, type TopicScheme } from './topics.js';
import { RateLimiter, type RateLimit } from '../core/rate-limit.js';
import { LogWindow } from '../core/log-window.js';

/**
 * One inbound MQTT message: topic -> device -> decoded events -> hub. Bad
 * input is counted by reason and logged without its payload; it never
 * throws and never changes state.
 */
export interface IngestOptions extends DecodeLimits {
  readonly topics: TopicScheme;
  /** Keyed digest of a Wi-Fi name for one owner (never stored in clear). */
  readonly digestNetworkName: (ownerId: string, ssid: string) => string;
  /**
   * Zero-byte payloads on device topics are retained clears (MQTT 3.1.1
   * §3.3.1.3), this service's own coming back (ingest/retained-clearing.ts):
   * ignored before any check. Otherwise they are checked and refused like
   * any payload that is not JSON: a device cannot send them unlimited.
   */
  readonly ignoreEmpty?: boolean;
  /** Messages per device (RATE_LIMIT_MQTT_DEVICE); more are refused as rate_limited. */
  readonly deviceRateLimit?: RateLimit;
  /**
   * Told of what was applied, synchronously (scale-out publishes it to the
   * other processes), and whether the message will be acknowledged to the
   * broker (delivered at QoS 1 or 2: the ingest journal keeps only those).
   */
  readonly onApplied?: (ownerId: string, deviceId: string, events: readonly SensorEvent[], acknowledged: boolean) => void;
}

export const INGEST_ACCEPTED = 'presence_ingest_messages_total';
export const INGEST_REJECTED = 'presence_ingest_rejected_total';
export const INGEST_EVENTS = 'presence_ingest_events_total';
export const INGEST_IGNORED = 'presence_ingest_ignored_total';

/** At most one log line per reason per window: a misbehaving device must not flood the logs. */
const LOG_WINDOW_MS = 10_000;

export class IngestPipeline {
  private readonly logged = new Map<IngestRejection, LogWindow>();
  private readonly perDevice: RateLimiter;

  constructor(
    private readonly directory: Directory,
    private readonly hub: PresenceHub,
    private readonly metrics: Metrics,
    private readonly log: Log,
    private readonly options: IngestOptions,
  ) {
    metrics.counter(INGEST_ACCEPTED, 'MQTT messages applied');
    metrics.counter(INGEST_EVENTS, 'Sensor events applied');
    metrics.counter(INGEST_REJECTED, 'MQTT messages refused, by reason');
    metrics.counter(INGEST_IGNORED, 'Valid MQTT messages with nothing to apply (OwnTracks lwt, cards, zero-byte retained clears, ...)');
    for (const reason of ingestRejections) metrics.inc(INGEST_REJECTED, { reason }, 0);
    this.perDevice = new RateLimiter(options.deviceRateLimit ?? { perSecond: 0, burst: 0 });
  }

  /**
   * Who published is the broker's business: the embedded broker lets a
   * device write to its own topic only, and an external one must be set up
   * to do the same. Here the topic must name an active device.
   * `acknowledged`: whether the message was delivered at QoS 1 or 2, so
   * that the broker is told it is safe (passed on to onApplied).
   */
  handle(topic: string, payload: Uint8Array, now: number, acknowledged = true): IngestRejection | undefined {
    const parsed = parseTopic(this.options.topics, topic);
    if (!parsed) return this.reject('bad_topic', undefined, now);
    // A zero-byte payload deletes a topic's retained message (MQTT 3.1.1
    // §3.3.1.3): this service's own clears come back here through its
    // subscription (ingest/retained-clearing.ts). Nothing to apply, and
    // nothing to count against the device, revoked or not.
    if (payload.length === 0 && this.options.ignoreEmpty === true) {
      this.metrics.inc(INGEST_IGNORED);
      return undefined;
    }
    const device = this.directory.activeDevice(parsed.deviceId);
    if (!device) return this.reject('unknown_device', parsed.deviceId, now);
    // A device flooding the service is refused before its payload is even parsed.
    if (this.perDevice.take(device.id, now) > 0) return this.reject('rate_limited', device.id, now);
    const decoded = decodeMessage(payload, this.options, now, parsed.format);
    if (!decoded.ok) return this.reject(decoded.reason, device.id, now);
    if (decoded.events.length === 0) {
      this.metrics.inc(INGEST_IGNORED);
      return undefined;
    }
    const events = decoded.events.map((event) => sanitizeEvent(event, (ssid) => this.options.digestNetworkName(device.ownerId, ssid)));
    this.hub.apply(device.ownerId, device.id, events, now);
    this.options.onApplied?.(device.ownerId, device.id, events, acknowledged);
    this.metrics.inc(INGEST_ACCEPTED);
    this.metrics.inc(INGEST_EVENTS, undefined, decoded.events.length);
    return undefined;
  }

  /** How long until the device may send again under its rate limit (0: now), taking nothing (ingest/embedded-broker.ts holds messages that long). */
  deviceWait(deviceId: string, now: number): number {
    return this.perDevice.wait(deviceId, now);
  }

  private reject(reason: IngestRejection, deviceId: string | undefined, now: number): IngestRejection {
    this.metrics.inc(INGEST_REJECTED, { reason });
    let window = this.logged.get(reason);
    if (!window) {
      window = new LogWindow(LOG_WINDOW_MS);
      this.logged.set(reason, window);
    }
    const suppressed = window.take(now);
    // The payload is never logged: it is personal data and attacker-controlled.
    if (suppressed !== undefined) this.log.warn({ reason, deviceId, suppressedSinceLast: suppressed }, 'mqtt message refused');
    return reason;
  }
}
