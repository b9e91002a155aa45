import { createHmac } from 'node:crypto';
import { Server as TlsServer } from 'node:tls';
import { mkdir, stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import type { MqttClient } from 'mqtt';
import { pino, type Logger } from 'pino';
import { createRemoteJWKSet } from 'jose';
import { z } from 'zod';
import { OidcVerifier } from '../core/identity/oidc.js';
import { Accounts, DEFAULT_SCOPES, type BrokerCredentials } from '../api/accounts.js';
import { buildApi, LIMIT_REFUSALS } from '../api/server.js';
import type { Config } from '../core/config.js';
import type { TlsMaterial } from '../core/tls/pem.js';
import type { IngestRejection } from '../core/errors.js';
import type { SensorEvent } from '../core/events.js';
import { openDatabase, type DatabaseHandle } from '../core/db/connect.js';
import { Repository } from '../core/db/repository.js';
import { listenForChanges, type ControlChange } from '../core/db/control-channel.js';
import { OwnerReloads } from '../core/owner-reloads.js';
import { ReloadGuard } from '../core/reload-guard.js';
import { AdminActionStore } from '../core/db/admin-actions.js';
import { loggableDbError } from '../core/db/db-error.js';
import { TokenRevocations } from '../core/token-revocations.js';
import { acquireDeliveryLease } from '../core/db/delivery-lease.js';
import { writeAccessLog, writeAccessRequests, writeRawEvents, writeStates } from '../core/db/state-writer.js';
import { RawEventBuffer } from '../core/raw-events.js';
import { WriteBehind } from '../core/db/write-behind.js';
import { AccessLogBuffer } from '../core/access-log.js';
import { KeyedQueue } from '../core/keyed-queue.js';
import { AccessRequestBuffer, type AccessRequestIntent } from '../core/access-requests.js';
import { Directory } from '../core/directory.js';
import { publicJwkOf, signingKeyFromPem } from '../core/identity/signing-key.js';
import { KeySet } from '../core/identity/key-set.js';
import { TokenVerifier } from '../core/identity/token-verifier.js';
import { SIGNING_ALG, type SigningKey } from '../core/identity/tokens.js';
import { DURATION_BUCKETS, Metrics } from '../core/metrics.js';
import { PresenceHub } from '../core/presence-hub.js';
import type { PresenceOverride } from '../core/presence-overrides.js';
import { startEmbeddedBroker } from '../ingest/embedded-broker.js';
import { deadLetter } from '../ingest/dead-letter.js';
import { RetainedRenewal, startExternalSubscriber } from '../ingest/external-subscriber.js';
import { RetainedClearing } from '../ingest/retained-clearing.js';
import { publishKept } from '../ingest/publish-kept.js';
import { DEVICE_ROLE, MosquittoDynsec } from '../ingest/mosquitto-dynsec.js';
import { dynsecCredentials } from '../ingest/broker-credentials.js';
import { IngestPipeline } from '../ingest/ingest-pipeline.js';
import { ClusterSync } from '../ingest/cluster-sync.js';
import { IngestJournal } from '../ingest/ingest-journal.js';
import { errorForLog } from '../core/log-error.js';
import { deviceTopic, type TopicScheme } from '../ingest/topics.js';
import { RuleBook } from '../policy/rule-book.js';
import { RepresentationCache } from '../api/representations.js';
import { DeviceRefs } from '../policy/device-refs.js';
import { WebhookDispatcher, type RetryPolicy } from '../api/webhook-dispatcher.js';
import { createWebhookPost } from '../api/webhook-transport.js';
import { SipGateway } from '../api/sip-gateway.js';
import { SipPublisherPool, sipGatewayConfigSchema, type SipGatewayConfig } from '../api/sip/index.js';
import { loadOrCreateDigestKey, loadOrCreateKeyPem } from './key-file.js';
import { loadOutboundTls } from './outbound-tls-files.js';
import { loadServerTls } from './tls-files.js';
import { tlsServerOptions, type ServerTls } from '../core/tls/server-tls.js';
import { serveMqttOverWebSockets } from '../ingest/mqtt-websocket.js';
import { LogWindow } from '../core/log-window.js';
import { disablePretenuring } from './gc-tuning.js';
import { applySnapshot, putWatcher } from './apply-snapshot.js';

/**
 * The composition root: wires storage, ingest and the API into one running
 * service. `api/` and `ingest/` never import each other; they meet here,
 * through the presence hub and the directory in `core/`.
 */
export interface ServiceOptions {
  readonly log?: Logger;
  readonly clock?: () => number;
  /** Webhook retry timing (tests shorten it). */
  readonly webhookRetry?: RetryPolicy;
  /** How often expired device broker passwords are looked for (MQTT_DEVICE_CREDENTIALS=mosquitto-dynsec; tests shorten it). */
  readonly brokerExpirySweepMs?: number;
  /** How long a retained clear may take to come back before it counts as unconfirmed (tests shorten it). */
  readonly retainedConfirmMs?: number;
}

export interface RunningService {
  readonly config: Config;
  /** https://... unless TLS=off. */
  readonly httpUrl: string;
  /** Where devices connect: the embedded broker's address (mqtts:// unless TLS=off), or MQTT_URL. */
  readonly mqttUrl: string;
  /** MQTT over WebSockets on the API's listener (wss:// unless TLS=off); undefined with an external broker. */
  readonly mqttWebSocketUrl: string | undefined;
  /** The local CA clients trust (DATA_DIR/tls/ca.pem) when the service made its own certificate. */
  readonly caFile: string | undefined;
  /**
   * Reads the certificate again (the operator's renewed files, or the local
   * CA's renewal) and serves it to new connections if it changed; also
   * done hourly, and on SIGHUP by bin/start.ts. A certificate that cannot
   * be used is reported and the current one stays.
   */
  reloadTls(): Promise<void>;
  readonly hub: PresenceHub;
  readonly metrics: Metrics;
  readonly signingKey: SigningKey;
  readonly log: Logger;
  /** Writes pending state now (tests, shutdown). */
  flush(): Promise<void>;
  close(): Promise<void>;
}

const WRITE_SECONDS = 'presence_write_behind_round_seconds';
const WRITE_BATCH_ROWS = 'presence_write_behind_batch_rows';
const WRITE_FAILURES = 'presence_write_behind_failures_total';
/** Rows per statement: the state writer's chunks are 500, the access log's 1000. */
const BATCH_BUCKETS = [1, 10, 50, 100, 250, 500, 1000];
/** How often idle owners are put at rest (PresenceHub.restIdle): an owner rests one to two periods after it was last read or changed. */
const STATE_REST_MS = 15_000;

export async function startService(config: Config, options: ServiceOptions = {}): Promise<RunningService> {
  // Errors are logged through errorForLog: no query parameters or row values (core/log-error.ts).
  const log = options.log ?? pino({ level: config.logLevel, base: { pid: process.pid }, serializers: { err: errorForLog } });
  const clock = options.clock ?? Date.now;
  // Before the service allocates anything: per-request objects must not be tenured by chance (bin/gc-tuning.ts).
  if (!disablePretenuring()) log.info('V8 allocation-site pretenuring left on (node was started with --allocation-site-pretenuring)');
  const cleanups: (() => Promise<void>)[] = [];
  const closeAll = async () => {
    for (const cleanup of cleanups.reverse()) await cleanup().catch((err: unknown) => log.error({ err }, 'shutdown step failed'));
  };

  // TLS files for the broker, the database and the SIP server: read and checked before anything starts.
  const outboundTls = await loadOutboundTls(config.outboundTls);
  for (const warning of outboundTls.warnings) log.warn(warning);
  // The counters tell when an owner's devices report: on a small deployment that is personal data.
  if (config.production && config.metricsToken === undefined) log.warn('METRICS_TOKEN is not set: /metrics is open to anyone who reaches the API');
  const postgres =
    config.database.kind === 'postgres'
      ? { url: config.database.url, statementTimeoutMs: config.database.statementTimeoutMs, ...(outboundTls.database ? { tls: outboundTls.database } : {}) }
      : undefined;
  // The SIP settings are checked before anything starts (the URI grammar lives with the SIP client).
  const sipConfig = config.sip ? parseSipSettings(config.sip, outboundTls.sip) : undefined;

  try {
    // Keys, the embedded database and the ingest journal live here: the service's user only.
    await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    const dataDirMode = (await stat(config.dataDir)).mode & 0o777;
    if ((dataDirMode & 0o077) !== 0) log.warn({ mode: dataDirMode.toString(8) }, 'DATA_DIR is open to other users: chmod 700 it');
    // First: a certificate problem is reported before anything slow starts.
    const tls: ServerTls | undefined = config.tls.mode === 'off' ? undefined : await loadServerTls(config.tls, config.dataDir, clock(), log);
    if (tls?.caFile) log.info({ caFile: tls.caFile }, `TLS: local certificate authority at ${tls.caFile}; trust it with curl --cacert ${tls.caFile} / mosquitto_sub --cafile ${tls.caFile}`);
    const tlsOptions = tls ? tlsServerOptions(tls) : undefined;
    const keyPem = config.signingKeyPem ?? (await loadOrCreateKeyPem(config.dataDir)).pem;
    const signingKey = await signingKeyFromPem(keyPem);

    const startedDb = Date.now();
    const database: DatabaseHandle = await openDatabase(
      postgres ? { kind: 'postgres', ...postgres } : { kind: 'embedded', dataDir: config.dataDir },
      (error) => log.warn({ err: error.message }, 'idle database connection lost'),
    );
    cleanups.push(() => database.close());
    log.info({ database: database.kind, ms: Date.now() - startedDb }, 'database ready, migrations applied');
    const repository = new Repository(database.db, database.long);
    const signingJwk = await publicJwkOf(signingKey);
    await repository.saveSigningKey(signingKey.kid, SIGNING_ALG, signingJwk);
    // Earlier keys keep verifying until retired (rotation); reloaded every minute and on an unknown kid.
    const keys = new KeySet(signingKey, signingJwk, () => repository.liveSigningKeys());
    await keys.reload();
    const keyReload = setInterval(() => void keys.reload().catch((err: unknown) => log.warn({ err }, 'reloading the signing keys failed')), 60_000);
    keyReload.unref();
    cleanups.push(async () => clearInterval(keyReload));

    const metrics = new Metrics();
    const directory = new Directory();
    const ruleBook = new RuleBook();
    const hub = new PresenceHub({ offlineAfterMs: config.offlineAfterMs }, (ownerId) => directory.settings(ownerId));
    // Scale-out, control plane: listening starts before the snapshot is
    // read, so a change another process commits in between is not missed;
    // changes wait in `controlBacklog` until the reloading below is wired.
    const clusterConfig = config.mqtt.kind === 'external' ? config.mqtt.cluster : undefined;
    const controlBacklog: { change: ControlChange; own: boolean }[] = [];
    const control: { onChange: (change: ControlChange, own: boolean) => void; onResync: () => void } = {
      onChange: (change, own) => void controlBacklog.push({ change, own }),
      onResync: () => undefined,
    };
    if (clusterConfig && postgres) {
      const listener = await listenForChanges(
        postgres,
        { onChange: (change, own) => control.onChange(change, own), onResync: () => control.onResync(), isOwnBackend: (processId) => database.ownsBackend(processId) },
        log,
      );
      cleanups.push(() => listener.close());
    }
    await loadSnapshot(repository, directory, ruleBook, hub, clock(), log);
    const adminActions = new AdminActionStore(database.db, database.long);
    const revocations = new TokenRevocations(adminActions, directory, clock);
    await revocations.reload();

    // Write-behind: presence state, and (privacy invariant 6) the access log.
    metrics.histogram(WRITE_SECONDS, 'Write-behind rounds: time to write everything pending, by writer (rounds with nothing to write are not counted)', DURATION_BUCKETS);
    metrics.histogram(WRITE_BATCH_ROWS, 'Batches written to the database, one statement each: rows, by writer (the write-behind writers, and publications: the HTTP PUBLISH group commit)', BATCH_BUCKETS);
    metrics.counter(WRITE_FAILURES, 'Write-behind rounds that failed (their rows are kept and retried), by writer');
    const writers: WriteBehind[] = [];
    // While PostgreSQL is unreachable the writes are held and retried: operators see it here (and in the logs).
    metrics.gauge('presence_write_behind_failing', 'Write-behind writers whose last write failed; their writes are held in memory and retried', () => writers.filter((w) => w.failing).length);
    const writeBehind = (name: string, rowsMetric: string, help: string, write: (onBatch: (rows: number) => void) => () => Promise<void>, options: { readonly start: boolean } = { start: true }) => {
      metrics.counter(rowsMetric, help);
      metrics.inc(WRITE_FAILURES, { writer: name }, 0);
      const batchRows = metrics.series(WRITE_BATCH_ROWS, { writer: name });
      const roundSeconds = metrics.series(WRITE_SECONDS, { writer: name });
      let rowsThisRound = 0;
      const round = write((rows) => {
        rowsThisRound += rows;
        batchRows(rows);
        metrics.inc(rowsMetric, undefined, rows);
      });
      const timed = async () => {
        const started = performance.now();
        rowsThisRound = 0;
        try {
          await round();
        } catch (error) {
          metrics.inc(WRITE_FAILURES, { writer: name });
          throw error;
        }
        if (rowsThisRound > 0) roundSeconds((performance.now() - started) / 1000);
      };
      const writer = new WriteBehind(name, config.persistIntervalMs, timed, log);
      writers.push(writer);
      if (options.start) writer.start();
      cleanups.push(() => writer.stop());
      return writer;
    };
    // Scale-out: what this process applies reaches the others over the broker (ingest/cluster-sync.ts).
    const requestWrite = { now: () => undefined as void };
    const cluster = clusterConfig
      ? new ClusterSync({ root: clusterConfig.syncRoot, clientId: clusterConfig.clientId, hub, clock, log, metrics, requestWrite: () => requestWrite.now() })
      : undefined;
    // A single process journals what it acknowledges until it is stored (ingest/ingest-journal.ts).
    const journaled = cluster ? undefined : IngestJournal.open(join(config.dataDir, 'ingest-journal'), log, { fsync: config.ingestJournalFsync });
    const journal = journaled?.journal;
    // Closed after the writer's last flush (cleanups run in reverse order).
    if (journal) {
      cleanups.push(async () => journal.close());
      metrics.gauge('presence_ingest_journal_failures', 'Ingest journal writes that failed since start (events then wait for the state write unprotected)', () => journal.failureCount);
    }
    // Its timer starts after the journal's replay (below): a round that took
    // its mark while the replay read (nothing dirty yet) and ended after it
    // would delete the replayed segments as stored before the flush that
    // stores them. The journal's own guard (Leftover.holds) covers reading
    // only: it cannot tell that round's mark from the flush's.
    const writer = writeBehind(
      'presence_state',
      'presence_state_rows_flushed_total',
      'Owner signal rows sent to the database by the write-behind',
      (onBatch) => writeStates(hub, repository, onBatch, clock, { progress: cluster ?? journal, shared: cluster !== undefined, forgetBefore: () => clock() - config.signalRetentionMs }),
      { start: false },
    );
    // The write-behind logs its own failures (without the rows: core/db/db-error.ts) and retries.
    requestWrite.now = () => void writer.flush().catch(() => undefined);
    metrics.gauge('presence_state_dirty_owners', 'Owners whose signals await the next write', () => hub.dirtyCount);
    metrics.gauge('presence_owners_in_memory', 'Owners with state in memory', () => hub.ownerCount);
    metrics.gauge('presence_owners_active', 'Owners read or changed in the last 15-30 s; the others rest (signals packed, no derived state unless watched)', () => hub.activeCount);

    const accessLog = new AccessLogBuffer();
    const auditWriter = writeBehind('access_log', 'presence_access_log_rows_written_total', 'Access-log rows written', (onBatch) =>
      writeAccessLog(accessLog, repository, onBatch),
    );
    metrics.gauge('presence_access_log_pending', 'Access-log entries awaiting the next write', () => accessLog.size);
    metrics.gauge('presence_access_log_dropped_records', 'Access-log records dropped since start because the buffer was full (should stay 0)', () => accessLog.dropped);
    // Access requests are answered from memory and written here, so their timing does not tell whether an owner exists.
    const accessRequestBuffer = new AccessRequestBuffer();
    const requestWriter = writeBehind('access_requests', 'presence_access_requests_written_total', 'Access requests written', (onBatch) =>
      writeAccessRequests(accessRequestBuffer, repository, onBatch),
    );
    metrics.gauge('presence_access_requests_pending', 'Access requests answered and awaiting the next write', () => accessRequestBuffer.size);
    const accessRequests = {
      get full() {
        return accessRequestBuffer.full;
      },
      submit: (request: AccessRequestIntent) => accessRequestBuffer.submit(request),
      flush: () => requestWriter.flush(),
      forgetOwner: (ownerId: string) => accessRequestBuffer.forgetOwner(ownerId),
    };
    // Privacy invariant 4: sensor events are kept only for owners who turned retention on, within the operator's cap.
    const rawEvents = new RawEventBuffer();
    const rawWriter = writeBehind('raw_events', 'presence_raw_events_written_total', 'Retained sensor events written', (onBatch) => writeRawEvents(rawEvents, repository, onBatch));
    metrics.gauge('presence_raw_events_pending', 'Retained sensor events awaiting the next write', () => rawEvents.size);
    metrics.gauge('presence_raw_events_dropped', 'Retained sensor events dropped since start because the buffer was full', () => rawEvents.dropped);
    const keepsRawEvents = (ownerId: string) => config.rawEventsMaxDays > 0 && directory.settings(ownerId).keepRawEventsDays > 0;
    const oidc = config.oidc ? await oidcVerifier(config.oidc, repository, log) : undefined;
    const verifier = new TokenVerifier(keys, config.tokenIssuer, undefined, clock, oidc);
    const topics = { root: config.mqtt.topicRoot, ownTracksRoot: config.mqtt.ownTracksRoot };
    const digestKey = await loadOrCreateDigestKey(config.dataDir, config.networkDigestKey, keyPem);
    const digestNetworkName = networkDigester(digestKey);
    // The ids views show devices by come from the same secret (a group shares it: NETWORK_DIGEST_KEY).
    const deviceRefs = DeviceRefs.derivedFrom(digestKey);
    const pipeline = new IngestPipeline(directory, hub, metrics, log, {
      topics,
      maxBytes: config.maxEventBytes,
      maxClockSkewMs: config.maxClockSkewMs,
      digestNetworkName,
      deviceRateLimit: config.limits.mqttDevice,
      // The retained clears this service sends (MQTT_CLEAR_RETAINED) come back through its subscription.
      ignoreEmpty: config.mqtt.kind === 'external' && config.mqtt.clearRetained,
      // An external broker has acknowledged a device's excess already: its
      // newest message waits for the limit (the embedded broker holds the
      // device back instead).
      keepNewestOverLimit: config.mqtt.kind === 'external',
      onKept: (waitMs) => keptTimer.schedule(waitMs),
      // Dead letters (set below with an external broker), for messages refused as they arrive or when a kept one is applied.
      onRejected: (topic, payload, reason, now) => onRejected?.(topic, payload, reason, now),
      onApplied: (ownerId: string, deviceId: string, events: readonly SensorEvent[], acknowledged: boolean) => {
        cluster?.applied(ownerId, deviceId, events);
        // The journal backs acknowledgements only: a QoS 0 message was never
        // acknowledged (MQTT 3.1.1 §4.3.1, at most once), and the next report
        // supersedes it. Journaling it cost about a quarter of its CPU
        // (bench/ingest.ts at QoS 0: 13.7-13.8 against 10.1-10.8 µs per
        // message, alternated runs).
        if (acknowledged) journal?.append(ownerId, deviceId, events);
        if (keepsRawEvents(ownerId)) rawEvents.record(ownerId, deviceId, events, clock());
      },
    });
    const keptTimer = soonestTimer(() => pipeline.applyKept(clock()), KEPT_TIMER_FLOOR_MS);
    let onRejected: ((topic: string, payload: Uint8Array, reason: IngestRejection, now: number) => void) | undefined;
    // An external broker's retained device messages are removed there (MQTT_CLEAR_RETAINED; set below).
    let retainedClearing: RetainedClearing | undefined;
    // The time one device message takes here (topic, device, rate limit,
    // decoding, validation, deriving), accepted or refused: what the
    // service adds between the broker's delivery and the state it serves.
    // Microseconds typically, so buckets from 10 µs. Two clock reads and a
    // bucket search per message: about 0.12 µs here (measured with a loop
    // of two million), against the ~19 µs of CPU a message costs (README,
    // Performance).
    metrics.histogram(INGEST_SECONDS, 'MQTT device messages: time to validate and apply (or refuse) one, in this process', INGEST_BUCKETS);
    const ingestSeconds = metrics.series(INGEST_SECONDS);
    // Scale-out: one process of the group delivers webhooks and SIP
    // publications and sweeps the broker's retained messages (the holder of
    // the delivery lease, acquired below).
    const delivery = { held: clusterConfig === undefined };
    // The renewals of the subscription that find what devices retain (MQTT_RETAINED_SWEEP_SECONDS, set below).
    let renewal: RetainedRenewal | undefined;
    const onMessage = (topic: string, payload: Buffer, acknowledged: boolean, retained = false) => {
      if (cluster?.owns(topic)) {
        cluster.handle(topic, payload);
        return;
      }
      // The broker's own topics (MQTT 3.1.1 §4.7.2: `$` topics are the
      // server's), such as the dynamic-security answers on the same
      // connection, are no device's and not ingest's to count as refused.
      if (topic.startsWith('$')) return;
      // A copy a renewal brought was received live already: cleared, not applied again.
      if (renewal?.brought(retained)) {
        retainedClearing?.observe(topic, payload, true);
        return;
      }
      const started = performance.now();
      const now = clock();
      pipeline.handle(topic, payload, now, acknowledged);
      ingestSeconds((performance.now() - started) / 1000);
      retainedClearing?.observe(topic, payload, retained);
    };

    if (journaled && journaled.leftover.segments > 0) {
      // Acknowledged before the last run stopped, perhaps never stored: applied
      // again (merging is idempotent) and stored before any device is heard.
      // An owner erased meanwhile is not brought back. Read a line at a time:
      // memory holds the merged state, never the whole journal.
      const now = clock();
      const owners = new Set<string>();
      let records = 0;
      for await (const record of journaled.leftover.records()) {
        records += 1;
        if (!directory.owner(record.owner)) continue;
        const ownerId = directory.ownerId(record.owner);
        hub.merge(ownerId, record.signals, now);
        owners.add(ownerId);
      }
      if (records > 0 || journaled.leftover.skipped > 0) {
        hub.markDirty(owners);
        await writer.flush();
        log.info({ records, owners: owners.size, skipped: journaled.leftover.skipped }, 'ingest journal replayed and stored');
      }
    }
    writer.start();

    const purge = async () => {
      // Privacy: a device silent past SIGNAL_RETENTION_HOURS is forgotten (storage too, at the next write-behind).
      const forgotten = await hub.forgetSilent(clock() - config.signalRetentionMs, clock);
      if (forgotten > 0) log.info({ owners: forgotten }, 'signals of silent devices forgotten past retention');
      const removed = await repository.purgeAccessLog(new Date(clock() - config.auditRetentionDays * 86_400_000));
      if (removed > 0) log.info({ removed }, 'access log purged past retention');
      const expired = await repository.purgeRawEvents(config.rawEventsMaxDays);
      if (expired > 0) log.info({ removed: expired }, 'retained sensor events purged past retention');
      const actions = await adminActions.purge(new Date(clock() - config.auditRetentionDays * 86_400_000));
      if (actions > 0) log.info({ removed: actions }, 'admin actions purged past retention');
    };
    // Off the start-up path: a large purge must not delay readiness. After
    // the journal's replay, which may bring back signals the purge forgets.
    cleanups.push(repeat(purge, 3_600_000, (err) => log.error({ err }, 'retention purge failed'), true));
    // Memory (issue 6): an owner neither read nor changed between two sweeps
    // rests (PresenceHub.restIdle: signals packed, derived state dropped
    // unless watched), and so does a consent policy nobody consulted or
    // changed (RuleBook.restIdle: packed, unless someone listens). Every
    // STATE_REST_MS, so an owner rests 15 to 30 s after it was last busy,
    // and one whose device reports every few seconds never does.
    cleanups.push(
      repeat(
        async () => {
          await hub.restIdle();
          await ruleBook.restIdle();
        },
        STATE_REST_MS,
        (err) => log.error({ err }, 'putting idle owners at rest failed'),
      ),
    );

    let mqttUrl: string;
    let embeddedBroker: Awaited<ReturnType<typeof startEmbeddedBroker>> | undefined;
    // An external broker authenticates devices itself: a revoked device's events are refused here (unknown_device).
    let disconnectDevices: (deviceIds: readonly string[]) => void = () => undefined;
    // Erasure removes the devices' broker credentials for good (dynamic security); the embedded broker only disconnects.
    let forgetDevices: (deviceIds: readonly string[]) => void = (deviceIds) => disconnectDevices(deviceIds);
    let brokerCredentials: BrokerCredentials | undefined;
    if (config.mqtt.kind === 'embedded') {
      metrics.counter(LIMIT_REFUSALS, 'Requests, streams, messages and connections refused by an abuse limit, by limit');
      for (const limit of ['mqtt_connections', 'mqtt_connect_address']) metrics.inc(LIMIT_REFUSALS, { limit }, 0);
      metrics.counter(INGEST_HELD, 'Device messages held back to the per-device rate limit (RATE_LIMIT_MQTT_DEVICE) before being applied (held), and connections closed for sending on regardless (closed)');
      for (const outcome of ['held', 'closed']) metrics.inc(INGEST_HELD, { outcome }, 0);
      const broker = await startEmbeddedBroker({
        host: config.mqtt.host,
        port: config.mqtt.port,
        topics,
        verifier,
        directory,
        clock,
        log,
        onMessage,
        beforeAck: () => journal?.sync(),
        // Over the per-device rate limit a device is slowed down, not refused: its messages wait.
        pace: (deviceId, now) => pipeline.deviceWait(deviceId, now),
        onHeld: (outcome) => metrics.inc(INGEST_HELD, { outcome }),
        // Room for the topic, the packet id and a device token in CONNECT.
        maxPacketBytes: config.maxEventBytes + 4096,
        maxConnections: config.limits.mqttMaxConnections,
        connectRate: config.limits.mqttConnect,
        onConnectionRefused: (limit) => metrics.inc(LIMIT_REFUSALS, { limit }),
        ...(tlsOptions ? { tls: tlsOptions } : {}),
      });
      cleanups.push(() => broker.close());
      embeddedBroker = broker;
      mqttUrl = `${broker.secure ? 'mqtts' : 'mqtt'}://${urlHost(config.mqtt.host)}:${broker.port}`;
      metrics.gauge('presence_mqtt_connected_devices', 'Devices connected to the embedded broker', broker.connectedClients);
      disconnectDevices = (deviceIds) => broker.disconnect(deviceIds);
    } else {
      // Made before the subscription: the broker hands over what it retains
      // right after the SUBACK, before the subscriber's start resolves.
      let client: MqttClient | undefined;
      if (config.mqtt.clearRetained) {
        const started = startRetainedClearing({ topics, grouped: cluster !== undefined, client: () => client, clock, metrics, log, confirmMs: options.retainedConfirmMs ?? RETAINED_CONFIRM_MS });
        retainedClearing = started.clearing;
        cleanups.push(started.stop);
      }
      const subscriber = await startExternalSubscriber({
        url: config.mqtt.url,
        username: config.mqtt.username,
        password: config.mqtt.password,
        // Stable across restarts, so the broker's persistent session (and the
        // events it queued while the service was down) is found again.
        clientId: config.mqtt.clientId ?? `presence-${hostname()}`,
        topics,
        log,
        onMessage,
        beforeAck: () => journal?.sync(),
        ...(outboundTls.mqtt ? { tls: outboundTls.mqtt } : {}),
        ...(cluster && clusterConfig ? { shareGroup: clusterConfig.shareGroup, extraSubscriptions: cluster.subscriptions(), will: cluster.will() } : {}),
        onClient: (made: MqttClient) => {
          client = made;
          cluster?.attach(made);
        },
      });
      // At a stop, the kept messages (acknowledged already) are applied
      // whatever the limit: once the subscription has ended in a single
      // process, before the writer's last flush (pushed earlier, so run
      // later); in a group, before that flush and while the connection
      // still carries their sync messages.
      const applyAllKept = async () => {
        keptTimer.stop();
        pipeline.applyAllKept(clock());
      };
      if (!cluster) cleanups.push(applyAllKept);
      cleanups.push(() => subscriber.close());
      // A device that begins to retain after the start is found by renewing
      // the subscription now and then; in a group, by the member that holds
      // the delivery lease, through the plain filters for a moment.
      if (config.mqtt.clearRetained && config.mqtt.retainedSweepMs > 0) {
        const renewing = new RetainedRenewal(subscriber.client, topics, cluster !== undefined);
        renewal = renewing;
        const renew = async () => {
          if (delivery.held) await renewing.renew();
        };
        cleanups.push(repeat(renew, config.mqtt.retainedSweepMs, (err) => log.warn({ err }, 'mqtt: renewing the subscription to find retained device messages failed')));
      }
      if (cluster) {
        // On a clean stop, what was applied is written and announced while
        // the connection is still up (cleanups run in reverse order), so the
        // other processes hold nothing for this one.
        cleanups.push(() => writer.flush());
        cleanups.push(applyAllKept);
        log.info({ node: cluster.node, shareGroup: clusterConfig?.shareGroup }, 'scale-out: sharing ingest with the group');
      }
      if (config.mqtt.deviceCredentials === 'mosquitto-dynsec') {
        // The broker authenticates devices against credentials this service
        // keeps there, so a revoked device is refused and disconnected by the
        // broker itself (ingest/mosquitto-dynsec.ts). Started before the
        // service is ready: a broker that will not take commands stops the start.
        const dynsec = new MosquittoDynsec({ client: subscriber.client, topics });
        await dynsec.start();
        cleanups.push(async () => dynsec.close());
        // A read-only command: a broker without the plugin, or a user
        // without its ACLs, is found now rather than at the first revocation.
        await dynsec.command({ command: 'getDefaultACLAccess' });
        // The shared device role of the operator's set-up: without it every device token would be a 503.
        await dynsec.command({ command: 'getRole', rolename: DEVICE_ROLE });
        const credentials = dynsecCredentials({ dynsec, store: repository, metrics, log, clock });
        brokerCredentials = credentials.credentials;
        disconnectDevices = (deviceIds) => credentials.disconnect(deviceIds);
        forgetDevices = (deviceIds) => credentials.forget(deviceIds);
        cleanups.push(
          repeat(() => credentials.sweepExpired(), options.brokerExpirySweepMs ?? 15_000, (err) => log.warn({ error: loggableDbError(err) }, 'expired broker passwords: sweep failed'), true),
        );
      }
      mqttUrl = config.mqtt.url;
      const deadLetterRoot = config.mqtt.deadLetterRoot;
      if (deadLetterRoot) {
        onRejected = (topic, payload, reason, now) => {
          const letter = deadLetter(deadLetterRoot, topic, payload, reason, now);
          if (letter) subscriber.client.publish(letter.topic, letter.payload, { qos: 0, retain: false });
        };
      }
    }

    /** Everything the write-behind holds, written: reads of storage then see it all. */
    const flushAll = async () => {
      await writer.flush();
      await auditWriter.flush();
      await rawWriter.flush();
      await requestWriter.flush();
    };
    const accounts = new Accounts(
      repository,
      directory,
      ruleBook,
      signingKey,
      config.tokenIssuer,
      config.presenceDomain,
      clock,
      hub,
      digestNetworkName,
      accessRequests,
      flushAll,
      (err) => log.error({ err }, 'recording an arrival failed'),
    );
    accounts.onDeviceRevoked((deviceId) => disconnectDevices([deviceId]));
    accounts.onOwnerErased((ownerId, deviceIds) => {
      rawEvents.forget(ownerId);
      forgetDevices(deviceIds);
    });
    if (brokerCredentials) accounts.useBrokerCredentials(brokerCredentials);
    accounts.onSettingsChange((ownerId) => {
      if (!keepsRawEvents(ownerId)) rawEvents.forget(ownerId);
    });
    metrics.gauge('presence_publication_writes_queued', 'HTTP PUBLISH writes waiting for the next group commit', () => accounts.publicationQueueDepth);
    accounts.onPublicationBatch(metrics.series(WRITE_BATCH_ROWS, { writer: 'publications' }));
    // "Share until I arrive" rules loaded from storage are watched from the start.
    for (const owner of snapshotOwners(directory, ruleBook)) accounts.watchArrivals(owner);

    const representations = new RepresentationCache();
    metrics.gauge('presence_representation_cache_chars', 'Rendered views held for reuse, in characters of key and body (bounded at 32 Mi)', () => representations.size.chars);
    const webhooks = new WebhookDispatcher({
      directory,
      ruleBook,
      hub,
      entityOf: (handle) => accounts.entityOf(handle),
      representations,
      deviceRefs,
      accessLog,
      clock,
      signingKey,
      issuer: config.tokenIssuer,
      metrics,
      // In production (WEBHOOK_ALLOW_HTTP off) a receiver's name that resolves to an internal address is refused at connect time.
      post: createWebhookPost({ refuseInternal: !config.webhookAllowHttp, refuseNetworks: config.webhookRefuseNetworks }),
      ...(options.webhookRetry ? { retry: options.webhookRetry } : {}),
    });
    cleanups.push(async () => webhooks.close());
    // Scale-out: one process of the group delivers webhooks and SIP
    // publications, the one holding the delivery lease (core/db/delivery-lease.ts).
    webhooks.setDelivering(delivery.held);
    for (const hook of await repository.listWebhooks()) webhooks.restore(hook);
    accounts.onOwnerErased((ownerId) => webhooks.removeOwner(ownerId));
    accounts.onOwnerCreated((ownerId, handle) => webhooks.ownerCreated(ownerId, handle));
    // Webhooks registered with a watcher's revoked tokens (the other processes drop them when the control channel reloads the owner).
    accounts.onWebhooksRemoved((ids) => {
      for (const id of ids) webhooks.remove(id);
    });
    // And those registered with one token revoked by its id.
    revocations.onWebhooksRemoved((ids) => {
      for (const id of ids) webhooks.remove(id);
    });
    const deliveryChanged: ((held: boolean) => void)[] = [(held) => webhooks.setDelivering(held)];

    if (config.sip && sipConfig) {
      // SIP gateway: publications are removed (Expires: 0) by the pool's close, after the gateway stops watching.
      // Outcomes reach the gateway once it exists (it needs the pool to be built).
      const outcomes: { gateway?: SipGateway } = {};
      const pool = await SipPublisherPool.create(sipConfig, { onOutcome: (outcome) => outcomes.gateway?.onOutcome(outcome) });
      cleanups.push(() => pool.close());
      if (!directory.activeWatcher(config.sip.audience)) log.warn('SIP_AUDIENCE names no active watcher: it matches no rule, so the SIP server is sent the offline view');
      const gateway = new SipGateway({
        directory,
        ruleBook,
        hub,
        entityOf: (handle) => pool.presentityUri(handle),
        pool,
        audience: config.sip.audience,
        enabled: (ownerId) => delivery.held && directory.settings(ownerId).sipPublish,
        representations,
        deviceRefs,
        accessLog,
        clock,
        metrics,
        onError: (err: unknown) => log.warn({ err }, 'SIP publication failed'),
      });
      outcomes.gateway = gateway;
      cleanups.push(async () => gateway.close());
      accounts.onSettingsChange((ownerId) => gateway.sync(ownerId));
      // An erased owner's publication is removed (gateway.sync finds no owner).
      accounts.onOwnerErased((ownerId) => gateway.sync(ownerId));
      for (const ownerId of directory.ownerIds()) gateway.sync(ownerId);
      deliveryChanged.push(() => {
        for (const ownerId of directory.ownerIds()) gateway.sync(ownerId);
      });
      log.info({ server: config.sip.server }, 'SIP gateway on');
    }
    // Owners read back from storage (core/owner-reloads.ts: one reload per
    // owner at a time, coalesced; overrides alone, batched, when only they
    // changed): in a group, what another process changed (the control
    // channel below); in any configuration, an owner whose write had an
    // unknown outcome (a lost answer). What this process changes while a
    // reload reads is not undone by the older snapshot (core/reload-guard.ts).
    const guard = new ReloadGuard();
    const RELOAD_FAILURES = 'presence_owner_reload_failures_total';
    metrics.counter(RELOAD_FAILURES, 'Reads of owners back from storage (changes elsewhere, healing) that failed, by kind (owner, overrides)');
    const reloadFailureLog = new LogWindow(30_000);
    accounts.onOwnerChanged((ownerId) => guard.changed(ownerId));
    const reloads = new OwnerReloads(
      {
        owner: async (ownerId) => {
          // Publications and statuses changed here meanwhile keep their local version (PresenceHub.finishOverridesReload).
          hub.beginOverridesReload(ownerId);
          guard.begin(ownerId);
          try {
            const snapshot = await repository.loadSnapshot(ownerId);
            // A rule, group, device or the settings changed here while
            // the snapshot was read: it may predate that change. Thrown
            // away, and the owner read again.
            if (guard.overtaken(ownerId)) return false;
            // Erased through another process: forgotten here too.
            if (!snapshot.owners.some((o) => o.id === ownerId)) {
              if (directory.owner(ownerId)) accounts.forgetOwner(ownerId);
              // Not loaded here, but a webhook of theirs may be (bound by a handle's reload): gone too.
              else webhooks.removeOwner(ownerId);
              return true;
            }
            // The owner's devices from the snapshot, not Directory.devicesOf (a scan of every device).
            const revokedBefore = new Set(snapshot.devices.filter((d) => directory.device(d.id)?.revoked === true).map((d) => d.id));
            applySnapshot(snapshot, directory, ruleBook, hub, clock(), log, ownerId);
            for (const device of snapshot.devices) if (device.revoked && !revokedBefore.has(device.id)) accounts.deviceRevoked(device.id);
            accounts.settingsChanged(ownerId);
            accounts.watchArrivals(ownerId);
            // Webhooks registered here from now on may be missing from what is read (WebhookDispatcher.replaceOwner).
            const mark = webhooks.registrationMark;
            const hooks = await repository.webhooksOfOwner(ownerId);
            // Erased (or otherwise changed) here while the webhooks were read: read again.
            if (guard.overtaken(ownerId)) return false;
            // Kept a webhook registered here that the list lacks: read once more to be sure it was not deleted elsewhere meanwhile.
            if (webhooks.replaceOwner(ownerId, hooks, mark)) reloads.request(ownerId, 'owner');
            return true;
          } finally {
            // Applied, thrown away, failed or the owner erased: nothing left to guard.
            hub.abandonOverridesReload(ownerId);
            guard.end(ownerId);
          }
        },
        overrides: async (ownerIds) => {
          for (const ownerId of ownerIds) hub.beginOverridesReload(ownerId);
          try {
            const rows = await repository.overridesOfOwners(ownerIds);
            const byOwner = new Map<string, PresenceOverride[]>(ownerIds.map((id) => [id, []]));
            for (const { ownerId, override } of rows) byOwner.get(ownerId)?.push(override);
            for (const [ownerId, overrides] of byOwner) {
              // An owner this process does not know yet (its creation still on the way): the whole owner.
              if (directory.owner(ownerId)) hub.finishOverridesReload(directory.ownerId(ownerId), overrides, clock());
              else reloads.request(ownerId, 'owner');
            }
          } finally {
            for (const ownerId of ownerIds) hub.abandonOverridesReload(ownerId);
          }
        },
      },
      (err, kind, ownerIds) => {
        // A database outage fails every reload and every healing retry:
        // counted each time, logged at most every 30 s with how many failed.
        metrics.inc(RELOAD_FAILURES, { kind });
        const held = reloadFailureLog.take(clock());
        if (held === undefined) return;
        log.error({ err, kind, owners: ownerIds.length, failedSinceLastLog: held + 1 }, 'reloading owners from storage failed');
      },
    );
    metrics.gauge('presence_owners_healing', 'Owners whose write had an unknown outcome, read back from storage until a read succeeds', () => reloads.healingCount);
    cleanups.push(async () => reloads.close());
    // A write with an unknown outcome: storage is read back until that
    // succeeds, in every configuration (a single process too).
    accounts.onWriteUncertain((ownerId, what) => reloads.heal(ownerId, what));
    if (clusterConfig && config.database.kind === 'postgres') {
      const reloadOwner = (ownerId: string): void => reloads.request(ownerId, 'owner');
      const reloadWatcher = (watcherId: string): void => {
        repository.loadWatcher(watcherId).then(
          (watcher) => watcher && putWatcher(directory, watcher),
          (err: unknown) => log.error({ err, watcherId }, 'reloading a watcher changed elsewhere failed'),
        );
      };
      // The webhooks of a handle that some waited on (migration 0018), one
      // read per handle at a time. As for owners (core/owner-reloads.ts), a
      // failed read is not retried here: the next change of that handle, or
      // the resynchronisation after the channel reconnects, reads it again.
      let controlClosed = false;
      cleanups.push(async () => {
        controlClosed = true;
      });
      const handleReloads = new KeyedQueue();
      /** Resolves once this handle's read is applied or has failed (logged). */
      const reloadWaitingWebhooks = (handle: string): Promise<void> =>
        handleReloads
          .run(handle, async () => {
            const mark = webhooks.registrationMark;
            const hooks = await repository.webhooksOfHandle(handle);
            // Kept one registered here after the mark: read again (WebhookDispatcher.replaceOwner).
            if (webhooks.replaceHandle(handle, hooks, mark)) void reloadWaitingWebhooks(handle);
          })
          .catch((err: unknown) => log.error({ error: loggableDbError(err) }, 'reloading the webhooks of a handle failed'));
      const reloadRevocations = (): void => void revocations.reload().catch((err: unknown) => log.error({ error: loggableDbError(err) }, 'reloading the token revocations failed'));
      // A reload that failed (a database blip) is not asked for again until
      // the next change: every minute too, as the signing keys are.
      cleanups.push(repeat(() => revocations.reload(), 60_000, (err) => log.warn({ error: loggableDbError(err) }, 'reloading the token revocations failed')));
      control.onChange = (change, own) => {
        if ('owner' in change) reloadOwner(change.owner);
        // A publication or status this process stored was applied here when
        // it was made, and no reload can undo it (PresenceHub.finishOverridesReload):
        // reloading it is work for nothing, a query per PUBLISH. Its other
        // changes are still reloaded (rare, and harmless: core/reload-guard.ts
        // keeps a reload from undoing them), which heals one whose answer was
        // lost even before the healing read does. Its own overrides are read
        // too for an owner whose write had an unknown outcome: the
        // notification may be the first news that it was stored.
        else if ('overrides' in change) {
          for (const ownerId of change.overrides) if (!own || reloads.isHealing(ownerId)) reloads.request(ownerId, 'overrides');
        }
        else if ('watcher' in change) reloadWatcher(change.watcher);
        else if ('handle' in change) void reloadWaitingWebhooks(change.handle);
        else if ('tokens' in change) reloadRevocations();
        // An account unlinked elsewhere: its provider tokens, cached here as verified, are checked again on their next use.
        else verifier.clear();
      };
      // Changes may have been missed while the channel was down: everything
      // is reloaded, each owner on its own, at most MAX_OWNER_RELOADS at a
      // time (costly with many owners; rare).
      control.onResync = () => {
        reloadRevocations();
        void repository.unheldWebhookHandles().then(
          (handles) => {
            // One handle at a time: there may be many, and the API needs the pool's connections more.
            void (async () => {
              for (const handle of new Set([...handles, ...webhooks.waitingHandles()])) {
                if (controlClosed) return;
                await reloadWaitingWebhooks(handle);
              }
            })();
          },
          (err: unknown) => log.error({ error: loggableDbError(err) }, 'control resync of the waiting webhooks failed'),
        );
        verifier.clear();
        void repository.ownerIdsAndWatchers().then(
          ({ ownerIds, watchers }) => {
            for (const watcher of watchers) putWatcher(directory, watcher);
            // At most MAX_OWNER_RELOADS at a time (core/owner-reloads.ts).
            for (const ownerId of ownerIds) reloadOwner(ownerId);
          },
          (err: unknown) => log.error({ err }, 'control resync failed'),
        );
      };
      for (const { change, own } of controlBacklog.splice(0)) control.onChange(change, own);
    }
    if (clusterConfig && postgres) {
      const lease = await acquireDeliveryLease(
        postgres,
        (held) => {
          delivery.held = held;
          for (const listener of deliveryChanged) listener(held);
        },
        log,
      );
      cleanups.push(() => lease.close());
    }

    let ready = false;
    const app = buildApi({
      log,
      directory,
      ruleBook,
      hub,
      verifier,
      accounts,
      metrics,
      clock,
      ready: () => ready,
      deviceTopic: (id) => deviceTopic(topics, id),
      accessLog,
      representations,
      deviceRefs,
      repository,
      webhooks,
      webhookAllowHttp: config.webhookAllowHttp,
      webhookRefuseNetworks: config.webhookRefuseNetworks,
      signingKey,
      keys,
      limits: config.limits,
      metricsToken: config.metricsToken,
      adminActions,
      revocations,
      adminTokenMaxSeconds: config.adminTokenMaxSeconds,
      ...(tlsOptions ? { tls: tlsOptions } : {}),
    });
    // MQTT over WebSockets on the API's listener, wired before it listens.
    const broker = embeddedBroker;
    const webSockets = broker
      ? serveMqttOverWebSockets({
          server: app.server,
          path: MQTT_WEBSOCKET_PATH,
          // One MQTT packet, with its fixed header (at most 5 bytes, MQTT 3.1.1 §2.2), per message at most.
          maxMessageBytes: config.maxEventBytes + 4096 + 5,
          atCapacity: () => broker.atCapacity(),
          onRefusedAtCapacity: () => metrics.inc(LIMIT_REFUSALS, { limit: 'mqtt_connections' }),
          admit: (address) => broker.admit(address),
          accept: (stream) => broker.accept(stream),
          log,
        })
      : undefined;
    await app.listen({ host: config.http.host, port: config.http.port });
    cleanups.push(() => app.close());
    // Runs before app.close (cleanups run in reverse): upgraded sockets would hold the HTTP server open.
    if (webSockets) cleanups.push(async () => webSockets.close());
    const address = app.server.address() as AddressInfo;
    const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
    const httpUrl = `${tls ? 'https' : 'http'}://${host}:${address.port}`;
    const mqttWebSocketUrl = webSockets ? `${tls ? 'wss' : 'ws'}://${host}:${address.port}${MQTT_WEBSOCKET_PATH}` : undefined;

    // Certificates are renewed without a restart: certbot and the like
    // renew weeks ahead, so an hourly look is soon enough.
    let served = tls?.certificate.fingerprint256;
    const reloadTls = async () => {
      if (config.tls.mode === 'off' || served === undefined) return;
      const next = await loadServerTls(config.tls, config.dataDir, clock(), log);
      if (next.certificate.fingerprint256 === served) return;
      const context = tlsServerOptions(next);
      if (app.server instanceof TlsServer) app.server.setSecureContext(context);
      embeddedBroker?.setSecureContext(context);
      served = next.certificate.fingerprint256;
      log.info({ validTo: new Date(next.certificate.validTo).toISOString() }, 'TLS: renewed certificate in use');
    };
    if (tls) {
      const tlsTimer = setInterval(
        () => void reloadTls().catch((err: unknown) => log.error({ err: err instanceof Error ? err.message : String(err) }, 'TLS: certificate reload failed; the current one stays')),
        3_600_000,
      );
      tlsTimer.unref();
      cleanups.push(async () => clearInterval(tlsTimer));
    }
    ready = true;
    log.info({ httpUrl, mqttUrl, mqttWebSocketUrl, database: database.kind, tls: config.tls.mode }, 'presence service ready');

    let closing: Promise<void> | undefined;
    return {
      config,
      httpUrl,
      mqttUrl,
      mqttWebSocketUrl,
      caFile: tls?.caFile,
      reloadTls,
      hub,
      metrics,
      signingKey,
      log,
      flush: flushAll,
      close: () => {
        ready = false;
        closing ??= closeAll();
        return closing;
      },
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}

/** Ingest latency per message (seconds), from 10 µs: the work is microseconds unless the process is overloaded. */
export const INGEST_SECONDS = 'presence_ingest_seconds';
export const INGEST_HELD = 'presence_ingest_held_total';
export const RETAINED_CLEARED = 'presence_mqtt_retained_cleared_total';
export const RETAINED_UNCONFIRMED = 'presence_mqtt_retained_unconfirmed_total';
/** A retained clear not back through the service's own subscription after this long is reported (ingest/retained-clearing.ts). */
const RETAINED_CONFIRM_MS = 30_000;
const INGEST_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.01, 0.1] as const;

/** Kept messages (IngestPipeline.keepOverLimit) are applied in rounds at least this far apart: a round scans them all. */
const KEPT_TIMER_FLOOR_MS = 25;

/** Where MQTT over WebSockets is served on the API's listener. */
export const MQTT_WEBSOCKET_PATH = '/mqtt';

/**
 * One timer for the soonest of many deadlines: `run` does what is due and
 * returns the ms until the next deadline, if any. No sooner than `floorMs`
 * after it is asked: each run may scan every deadline, so nearby ones are
 * taken together.
 */
function soonestTimer(run: () => number | undefined, floorMs: number): { schedule(ms: number): void; stop(): void } {
  let timer: NodeJS.Timeout | undefined;
  let due = Infinity;
  const fire = () => {
    timer = undefined;
    due = Infinity;
    const next = run();
    if (next !== undefined) schedule(next);
  };
  const schedule = (wanted: number) => {
    const ms = Math.max(floorMs, Math.ceil(wanted));
    const at = performance.now() + ms;
    if (timer && at >= due) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(fire, ms);
    timer.unref();
  };
  return {
    schedule,
    stop: () => {
      clearTimeout(timer);
      timer = undefined;
    },
  };
}

/**
 * Runs `task` every `ms` (and once now with `now`), one run at a time: a
 * run that takes longer delays the next rather than overlapping it. A
 * failure goes to `onError` and the next run comes as usual. Returns the
 * cleanup: no more runs, then the one in progress finished.
 */
function repeat(task: () => Promise<unknown>, ms: number, onError: (err: unknown) => void, now = false): () => Promise<void> {
  let running: Promise<unknown> = Promise.resolve();
  const run = () => {
    running = running.then(task).catch(onError);
  };
  if (now) run();
  const timer = setInterval(run, ms);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/** A host for a URL: IPv6 addresses in brackets (RFC 3986 §3.2.2). */
/**
 * MQTT_CLEAR_RETAINED with an external broker (ingest/retained-clearing.ts):
 * the clears, published on the service's own connection, counted; outside a
 * group, a sweep each `confirmMs` counts and reports those not back.
 */
function startRetainedClearing(deps: {
  readonly topics: TopicScheme;
  /** In a scale-out group the clear comes back to any member: not checked there. */
  readonly grouped: boolean;
  readonly client: () => MqttClient | undefined;
  readonly clock: () => number;
  readonly metrics: Metrics;
  readonly log: Logger;
  readonly confirmMs: number;
}): { clearing: RetainedClearing; stop: () => Promise<void> } {
  const { metrics, clock, log } = deps;
  metrics.counter(RETAINED_CLEARED, 'Zero-byte retained messages sent to remove device messages an external broker retains');
  const clearing = new RetainedClearing({
    topics: deps.topics,
    publish: (topic) => {
      // QoS 1 for one process: its echo, which lets the topic's next clear
      // go, waits in the persistent session like any device message, and
      // publishKept sends it again if mqtt.js drops it after a reconnect.
      // QoS 0 in a group, where nothing waits for the echo: a QoS 1 clear
      // per OwnTracks report would fill mqtt.js's store, resent one round
      // trip each after a reconnect while the members' PUBACKs wait
      // (ingest/cluster-sync.ts).
      const client = deps.client();
      if (client) publishKept(client, topic, Buffer.alloc(0), { qos: deps.grouped ? 0 : 1, retain: true });
      metrics.inc(RETAINED_CLEARED);
    },
    ...(deps.grouped ? {} : { confirm: { clock, afterMs: deps.confirmMs } }),
  });
  if (deps.grouped) return { clearing, stop: async () => undefined };
  metrics.counter(RETAINED_UNCONFIRMED, "Retained clears that did not come back through the service's own subscription (the broker may deny the write)");
  const window = new LogWindow(600_000);
  const sweep = async () => {
    const unconfirmed = clearing.sweep();
    if (unconfirmed === 0) return;
    metrics.inc(RETAINED_UNCONFIRMED, undefined, unconfirmed);
    const heldBack = window.take(clock());
    if (heldBack === undefined) return;
    log.warn(
      { unconfirmed, heldBack },
      'mqtt: zero-byte retained messages sent to remove what devices retain did not come back; the broker may deny the service a write right on device topics (README, Devices and MQTT), or set MQTT_CLEAR_RETAINED=false',
    );
  };
  return { clearing, stop: repeat(sweep, deps.confirmMs, (err) => log.error({ err }, 'retained clears: sweep failed')) };
}

function urlHost(host: string): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]` : host;
}

/**
 * Wi-Fi names are stored only as HMAC-SHA256(key, ownerId, ssid), so the
 * same network digests differently for each owner and a database dump does
 * not reveal names by dictionary. The key (bin/key-file.ts) is not the
 * signing key, so rotating the signing key leaves the digests as they were.
 */
function networkDigester(key: Buffer): (ownerId: string, ssid: string) => string {
  return (ownerId, ssid) => createHmac('sha256', key).update(ownerId).update('\0').update(ssid).digest('base64url').slice(0, 22);
}

function parseSipSettings(sip: NonNullable<Config['sip']>, tls: TlsMaterial | undefined): SipGatewayConfig {
  const parsed = sipGatewayConfigSchema.safeParse({
    server: sip.server,
    ...(tls ? { tls } : {}),
    domain: sip.domain,
    localHost: sip.localHost,
    expires: sip.expires,
    ...(sip.username !== undefined ? { username: sip.username, password: sip.password } : {}),
  });
  if (!parsed.success) throw new Error(`invalid SIP configuration: ${parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return parsed.data;
}

/** Owners with at least one rule (the only ones an arrival can concern). */
function snapshotOwners(directory: Directory, ruleBook: RuleBook): string[] {
  return directory.ownerIds().filter((id) => ruleBook.rules(id).length > 0);
}

async function loadSnapshot(repository: Repository, directory: Directory, ruleBook: RuleBook, hub: PresenceHub, now: number, log: Logger) {
  const snapshot = await repository.loadSnapshot();
  applySnapshot(snapshot, directory, ruleBook, hub, now, log, undefined);
  log.info({ owners: snapshot.owners.length, devices: snapshot.devices.length, watchers: snapshot.watchers.length }, 'directory loaded');
}

/**
 * The external provider's verifier: its JWK Set from OIDC_JWKS_URL, or
 * from the jwks_uri its discovery document names (OpenID Connect Discovery
 * 1.0 §4; the document's issuer must be the configured one, §4.3). jose
 * caches the keys and fetches them again for a key id it has not seen.
 */
async function oidcVerifier(oidc: NonNullable<Config['oidc']>, repository: Repository, log: Logger): Promise<OidcVerifier> {
  let jwksUrl = oidc.jwksUrl;
  if (!jwksUrl) {
    const discovery = new URL(`${oidc.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`);
    const response = await fetch(discovery, { signal: AbortSignal.timeout(10_000) }).catch((error: unknown) => {
      throw new Error(`cannot read the OpenID provider's configuration at ${discovery.href}: ${error instanceof Error ? error.message : String(error)}`);
    });
    const document = z.object({ issuer: z.string(), jwks_uri: z.url() }).safeParse(await response.json().catch(() => undefined));
    if (!response.ok || !document.success) throw new Error(`the OpenID provider's configuration at ${discovery.href} is not usable (HTTP ${response.status})`);
    if (document.data.issuer !== oidc.issuer) throw new Error(`the OpenID provider says its issuer is ${document.data.issuer}, not OIDC_ISSUER ${oidc.issuer}`);
    jwksUrl = document.data.jwks_uri;
  }
  const keys = createRemoteJWKSet(new URL(jwksUrl), { cooldownDuration: oidc.jwksCooldownMs, cacheMaxAge: oidc.jwksMaxAgeMs, timeoutDuration: 5000 });
  log.info({ issuer: oidc.issuer, jwksUrl }, 'accepting tokens of an external OpenID provider');
  return new OidcVerifier({ issuer: oidc.issuer, audience: oidc.audience, algorithms: oidc.algorithms }, keys, (issuer, subject) => repository.linkedIdentity(issuer, subject), {
    owner: DEFAULT_SCOPES.owner,
    watcher: DEFAULT_SCOPES.watcher,
  });
}
