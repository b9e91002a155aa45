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
  /** Messages per device (RATE_LIMIT_MQTT_DEVICE); more are refused as rate_limited (but see keepNewestOverLimit). */
  readonly deviceRateLimit?: RateLimit;
  /**
   * An external broker: the newest messages over a device's limit are kept
   * (up to KEPT_PER_DEVICE) and applied as the limit allows, older ones
   * past that refused. See `keepOverLimit`.
   */
  readonly keepNewestOverLimit?: boolean;
  /** Told, when a message is kept, how many ms until its device may send again: call `applyKept` then. */
  readonly onKept?: (waitMs: number) => void;
  /** Told of every message refused, as it arrives or when a kept one is applied (dead letters). */
  readonly onRejected?: (topic: string, payload: Uint8Array, reason: IngestRejection, now: number) => void;
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
export const INGEST_KEPT = 'presence_ingest_kept_total';

/** What the kept messages may hold in all: past either bound, the excess is refused as before. */
const MAX_KEPT = 10_000;
const MAX_KEPT_BYTES = 16 * 1024 * 1024;
/** Per device, as many as the embedded broker holds per connection: a phone's offline queue, applied within seconds at the default limit. */
export const KEPT_PER_DEVICE = 100;

interface Kept {
  readonly topic: string;
  readonly payload: Uint8Array;
  readonly acknowledged: boolean;
}

/** At most one log line per reason per window: a misbehaving device must not flood the logs. */
const LOG_WINDOW_MS = 10_000;

export class IngestPipeline {
  private readonly logged = new Map<IngestRejection, LogWindow>();
  private readonly perDevice: RateLimiter;
  /** The newest messages over their device's limit, by device id, each device's oldest first (keepNewestOverLimit). */
  private readonly kept = new Map<string, Kept[]>();
  private keptCount = 0;
  private keptBytes = 0;
  private keeping: boolean;

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
    metrics.counter(INGEST_KEPT, `MQTT messages over their device rate limit kept to be applied as it allows (the newest ${KEPT_PER_DEVICE} per device; counted again as applied or refused then)`);
    metrics.gauge('presence_ingest_kept', 'MQTT messages over their device rate limit waiting to be applied', () => this.keptCount);
    this.keeping = options.keepNewestOverLimit === true;
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
    return this.apply(topic, payload, now, acknowledged, false);
  }

  /** `unlimited`: a kept message applied at a stop, whatever the device's rate limit. */
  private apply(topic: string, payload: Uint8Array, now: number, acknowledged: boolean, unlimited: boolean): IngestRejection | undefined {
    const reason = this.check(topic, payload, now, acknowledged, unlimited);
    if (reason !== undefined) this.options.onRejected?.(topic, payload, reason, now);
    return reason;
  }

  private check(topic: string, payload: Uint8Array, now: number, acknowledged: boolean, unlimited: boolean): IngestRejection | undefined {
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
    const wait = unlimited ? 0 : this.perDevice.take(device.id, now);
    if (wait > 0) return this.keepOverLimit(device.id, topic, payload, acknowledged, wait, now);
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

  /**
   * With an external broker, a message over its device's limit has already
   * been acknowledged to the device (MQTT 3.1.1 §4.3.2): refusing them all
   * lost a burst's newest reports (a phone flushing its offline queue
   * showed where it was minutes ago), and keeping only the newest lost the
   * trail before it. So the newest KEPT_PER_DEVICE per device are kept,
   * unparsed, and applied oldest first as the device's bucket refills; an
   * older one pushed out is refused as rate_limited, as is one that finds
   * MAX_KEPT or MAX_KEPT_BYTES taken by other devices. The work applied stays
   * within the limit; a device still flooding takes every refilled token
   * with a new message, so its kept ones wait for the end of the burst, and
   * the burst's last reports are applied then. Kept messages are not
   * journaled: one lost to a crash before it was applied was acknowledged,
   * as every refused one is. One refused when applied (its device revoked
   * meanwhile, a bad payload) is counted and reported (onRejected) then.
   * Messages that take a refilled token go before the kept ones: signals
   * merge newest first by their own time, so an older report applied later
   * changes nothing it should not.
   */
  private keepOverLimit(deviceId: string, topic: string, payload: Uint8Array, acknowledged: boolean, wait: number, now: number): IngestRejection | undefined {
    if (!this.keeping) return this.reject('rate_limited', deviceId, now);
    // Too large to be applied anyway: not worth a place (decodeMessage's check, made here as it is not reached).
    if (payload.byteLength > this.options.maxBytes) return this.reject('payload_too_large', deviceId, now);
    let queue = this.kept.get(deviceId);
    // Room is made from the device's own oldest only if its own can make it:
    // when other devices hold the bounds, the new one is refused and the
    // device keeps what it has.
    let ownBytes = 0;
    for (const k of queue ?? []) ownBytes += k.payload.byteLength;
    if (this.keptCount - (queue?.length ?? 0) + 1 > MAX_KEPT || this.keptBytes - ownBytes + payload.byteLength > MAX_KEPT_BYTES) return this.reject('rate_limited', deviceId, now);
    const overBound = () => this.keptCount + 1 > MAX_KEPT || this.keptBytes + payload.byteLength > MAX_KEPT_BYTES;
    // Room made from the device's own oldest first: its newest report matters most.
    while (queue && queue.length > 0 && (queue.length >= KEPT_PER_DEVICE || overBound())) {
      const oldest = this.unkeepOldest(deviceId, queue);
      const reason = this.reject('rate_limited', deviceId, now);
      this.options.onRejected?.(oldest.topic, oldest.payload, reason, now);
    }
    if (!queue || queue.length === 0) {
      queue = [];
      this.kept.set(deviceId, queue);
    }
    // A copy: the broker client's buffer may be a slice of a larger read.
    queue.push({ topic, payload: Buffer.from(payload), acknowledged });
    this.keptCount += 1;
    this.keptBytes += payload.byteLength;
    this.metrics.inc(INGEST_KEPT);
    this.options.onKept?.(wait);
    return undefined;
  }

  /** Applies kept messages, each device's oldest first, while its bucket has tokens. Returns the ms until the next kept one is due, if any. */
  applyKept(now: number): number | undefined {
    let next = Infinity;
    for (const [deviceId, queue] of this.kept) {
      let wait = this.perDevice.wait(deviceId, now);
      while (wait === 0 && queue.length > 0) {
        this.applyEach([this.unkeepOldest(deviceId, queue)], now, false);
        wait = this.perDevice.wait(deviceId, now);
      }
      if (queue.length > 0) next = Math.min(next, wait);
    }
    return next === Infinity ? undefined : next;
  }

  /** At a stop: applies every kept message whatever the limit, and keeps none from now on (later excess is refused). */
  applyAllKept(now: number): void {
    this.keeping = false;
    const all = [...this.kept.values()].flat();
    this.kept.clear();
    this.keptCount = 0;
    this.keptBytes = 0;
    this.applyEach(all, now, true);
  }

  private unkeepOldest(deviceId: string, queue: Kept[]): Kept {
    const oldest = queue.shift() as Kept;
    if (queue.length === 0 && this.kept.get(deviceId) === queue) this.kept.delete(deviceId);
    this.keptCount -= 1;
    this.keptBytes -= oldest.payload.byteLength;
    return oldest;
  }

  private applyEach(kept: readonly Kept[], now: number, unlimited: boolean): void {
    for (const k of kept) {
      try {
        this.apply(k.topic, k.payload, now, k.acknowledged, unlimited);
      } catch (err) {
        // A fault in applying (not bad input, which is refused) must not lose the others due or stop the timer.
        this.log.error({ err }, 'applying a kept MQTT message failed');
      }
    }
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
