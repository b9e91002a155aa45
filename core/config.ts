import { z } from 'zod';
import { networkListSchema, type Network } from './networks.js';
import { deepFreeze } from './deep-freeze.js';
import { rateLimitSchema, type RateLimit } from './rate-limit.js';
import { isLoopback, localCertificateNames } from './tls/host-names.js';

/**
 * Service configuration. Read once from the environment by the entry point,
 * validated here, frozen. Every problem is reported at once so an operator
 * fixes a broken deployment in one pass.
 *
 * With nothing set the service runs on embedded defaults: an in-process MQTT
 * broker (aedes) and an embedded PostgreSQL (PGlite) under DATA_DIR.
 */
const port = z.coerce.number().int().min(0).max(65535);
const positiveInt = z.coerce.number().int().positive();

const urlWithScheme = (schemes: readonly string[]) =>
  z.string().refine(
    (value) => {
      try {
        return schemes.includes(new URL(value).protocol.replace(/:$/, ''));
      } catch {
        return false;
      }
    },
    { message: `must be a URL with scheme ${schemes.join(', ')}` },
  );

export const DATABASE_SSL_MODES = ['disable', 'require', 'verify-full'] as const;
export type DatabaseSslMode = (typeof DATABASE_SSL_MODES)[number];

/**
 * How long one statement of the service may run on PostgreSQL before the
 * server cancels it (core/db/statement-timeout.ts). Its statements are
 * small: a write batch, one rule, one page of a history. One still
 * running after 30 s waits on something else (a lock an operator's
 * session holds, a stalled disk), and holding one of the pool's ten
 * connections longer only makes every later query wait too.
 */
export const DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS = 30_000;

const topicRoot = z.string().regex(/^[A-Za-z0-9_-]+(\/[A-Za-z0-9_-]+)*$/, 'must be topic levels of A-Z a-z 0-9 _ - separated by /');

export const envSchema = z.object({
  NODE_ENV: z.enum(['development', 'production', 'test']).default('development'),
  HOST: z.string().min(1).default('127.0.0.1'),
  PORT: port.default(8080),
  // --- Inbound TLS (what the service serves: HTTPS, MQTT over TLS, MQTT over secure WebSockets) ---
  /** auto: TLS_CERT_FILE/TLS_KEY_FILE if set, else a certificate from a local CA under DATA_DIR/tls; off: plain text (loopback, never production). */
  TLS: z.enum(['auto', 'off']).default('auto'),
  /** PEM: the server certificate, then any intermediate certificates (RFC 8446 §4.4.2: the leaf comes first). */
  TLS_CERT_FILE: z.string().min(1).optional(),
  /** PEM: the certificate's private key (PKCS#8, SEC1 or PKCS#1), unencrypted. */
  TLS_KEY_FILE: z.string().min(1).optional(),
  // --- end of inbound TLS ---
  DATA_DIR: z.string().min(1).default('./data'),
  DATABASE_URL: urlWithScheme(['postgres', 'postgresql']).optional(),
  /** PostgreSQL's statement_timeout for the service's queries; default below (DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS). */
  DATABASE_STATEMENT_TIMEOUT_MS: positiveInt.min(100).max(3_600_000).optional(),
  MQTT_URL: urlWithScheme(['mqtt', 'mqtts', 'tcp', 'ssl', 'ws', 'wss']).optional(),
  MQTT_USERNAME: z.string().min(1).optional(),
  MQTT_PASSWORD: z.string().min(1).optional(),
  MQTT_CLIENT_ID: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 of A-Z a-z 0-9 _ . -').optional(),
  MQTT_HOST: z.string().min(1).default('127.0.0.1'),
  // 1883 is the standard MQTT port; the embedded broker defaults to 1884 so it
  // can run beside a system broker (this project's machines run Mosquitto).
  MQTT_PORT: port.default(1884),
  MQTT_TOPIC_ROOT: topicRoot
    .default('presence'),
  OWNTRACKS_TOPIC_ROOT: topicRoot
    .default('owntracks'),
  MQTT_DEAD_LETTER_TOPIC: topicRoot
    .optional(),
  /**
   * `mosquitto-dynsec`: the external broker is a Mosquitto with the Dynamic
   * Security plugin, and the service administers device credentials on it
   * (ingest/mosquitto-dynsec.ts): a device token issued becomes the device's
   * broker password, and a revoked device is disabled and disconnected.
   */
  MQTT_DEVICE_CREDENTIALS: z.enum(['none', 'mosquitto-dynsec']).default('none'),
  /**
   * true: with MQTT_URL, the service removes device messages the broker
   * retains (a zero-byte retained PUBLISH; ingest/retained-clearing.ts), which
   * needs a write right on device topics; false: the broker keeps them.
   */
  MQTT_CLEAR_RETAINED: z.enum(['true', 'false']).default('true'),
  /**
   * With MQTT_CLEAR_RETAINED, one process (no MQTT_SHARE_GROUP): every this
   * many seconds the ingest subscription is renewed, so the broker sends
   * again what it retains (MQTT 3.1.1 §3.8.4) and a device that began to
   * retain is found and cleared; 0: only at start.
   */
  MQTT_RETAINED_SWEEP_SECONDS: z.coerce.number().int().min(0).max(86_400).default(300),
  /** Scale-out: processes sharing this group split the device topics (MQTT 5 / Mosquitto `$share/{group}/...`). */
  MQTT_SHARE_GROUP: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 of A-Z a-z 0-9 _ -').optional(),
  /** Scale-out: where the processes tell each other what they applied (below it: {clientId}/{signals|persisted|gone}). */
  MQTT_SYNC_TOPIC: topicRoot.default('presence-sync'),
  SIGNING_KEY: z
    .string()
    .refine((v) => v.includes('-----BEGIN PRIVATE KEY-----'), 'must be a PKCS#8 PEM private key (P-256)')
    .optional(),
  /** Key of the per-owner Wi-Fi name digests and of the ids views show devices by (base64url, at least 32 bytes); else DATA_DIR/network-digest.key. Set it for a group. */
  NETWORK_DIGEST_KEY: z
    .string()
    .regex(/^[A-Za-z0-9_-]{43,}$/, 'must be at least 32 random bytes in base64url (43 characters or more)')
    .optional(),
  TOKEN_ISSUER: z.string().min(1).default('presence-service'),
  /** An external OpenID Connect provider whose access tokens the API accepts for linked accounts. */
  OIDC_ISSUER: urlWithScheme(['https', 'http']).optional(),
  OIDC_AUDIENCE: z.string().min(1).max(512).optional(),
  /** Bearer token that GET /metrics requires (Prometheus `authorization.credentials`); unset: /metrics is open. */
  METRICS_TOKEN: z
    .string()
    .regex(/^[A-Za-z0-9._~+/=-]{32,512}$/, 'must be 32-512 characters of A-Z a-z 0-9 . _ ~ + / = - (an RFC 6750 bearer token)')
    .optional(),
  /** Default: the jwks_uri of {OIDC_ISSUER}/.well-known/openid-configuration. */
  OIDC_JWKS_URL: urlWithScheme(['https', 'http']).optional(),
  OIDC_ALGORITHMS: z
    .string()
    .regex(/^(RS|PS|ES)(256|384|512)(,(RS|PS|ES)(256|384|512))*$/, 'must be a comma-separated list of RS256, PS256, ES256 and the like')
    .default('RS256,ES256'),
  /** After fetching the provider's keys, no new fetch for a key id it has not seen for this long. */
  OIDC_JWKS_COOLDOWN_SECONDS: z.coerce.number().int().min(0).max(3600).default(30),
  /** The provider's keys are fetched again after this long, so keys it dropped stop verifying. */
  OIDC_JWKS_MAX_AGE_SECONDS: z.coerce.number().int().min(1).max(86_400).default(600),
  PRESENCE_DOMAIN: z
    .string()
    .regex(/^[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?)*$/, 'must be a DNS name')
    .default('presence.local'),
  OFFLINE_AFTER_SECONDS: positiveInt.default(900),
  /** A device silent this long has its last signals forgotten, in memory and in storage (at least OFFLINE_AFTER_SECONDS). */
  SIGNAL_RETENTION_HOURS: positiveInt.max(8760).default(72),
  MAX_CLOCK_SKEW_SECONDS: positiveInt.default(300),
  MAX_EVENT_BYTES: positiveInt.max(1_048_576).default(16_384),
  PERSIST_INTERVAL_MS: positiveInt.max(60_000).default(250),
  /** true: the ingest journal is flushed to the disk (fdatasync) before devices are acknowledged, so an acknowledgement survives a power loss; false: written to the kernel only (survives the process). */
  INGEST_JOURNAL_FSYNC: z.enum(['true', 'false']).default('false'),
  AUDIT_RETENTION_DAYS: positiveInt.max(3650).default(90),
  /** The longest an admin token may live (exp - iat); a longer one is refused whoever signed it. */
  ADMIN_TOKEN_MAX_SECONDS: positiveInt.min(60).max(30 * 86_400).default(3600),
  /** The longest an owner may keep raw sensor events (their keepRawEventsDays is capped to it); 0 keeps none for anyone. */
  RAW_EVENTS_MAX_DAYS: z.coerce.number().int().min(0).max(365).default(30),
  /** Abuse limits (PER_SECOND/BURST, 0: off): HTTP requests per client address and per bearer token, MQTT messages per device. */
  RATE_LIMIT_HTTP_ADDRESS: rateLimitSchema.prefault('200/400'),
  RATE_LIMIT_HTTP_TOKEN: rateLimitSchema.prefault('50/100'),
  RATE_LIMIT_MQTT_DEVICE: rateLimitSchema.prefault('20/60'),
  /**
   * Connections to the embedded broker per client address (its port, TLS
   * and WebSockets alike), refused before any TLS handshake or token check:
   * each CONNECT costs a signature verification. Generous, for many devices
   * behind one NAT reconnecting at once after an outage.
   */
  RATE_LIMIT_MQTT_CONNECT: rateLimitSchema.prefault('20/200'),
  HTTP_MAX_BODY_BYTES: positiveInt.min(1024).max(16 * 1024 * 1024).default(64 * 1024),
  HTTP_MAX_CONNECTIONS: positiveInt.max(1_000_000).default(20_000),
  HTTP_MAX_STREAMS: positiveInt.max(1_000_000).default(10_000),
  HTTP_MAX_STREAMS_PER_CALLER: positiveInt.max(10_000).default(8),
  MQTT_MAX_CONNECTIONS: positiveInt.max(1_000_000).default(100_000),
  /** The SIP presence server the gateway PUBLISHes to, e.g. sip:127.0.0.1:5070;transport=tcp; unset: no gateway. */
  SIP_SERVER: z.string().regex(/^sips?:[^\s<>"]+$/, 'must be a sip: or sips: URI such as sip:127.0.0.1:5070;transport=tcp').optional(),
  /** Domain of the presentity URIs the gateway publishes (sip:{handle}@{SIP_DOMAIN}); default PRESENCE_DOMAIN. */
  SIP_DOMAIN: z.string().min(1).max(253).optional(),
  /** The watcher id whose consent decides what the SIP server receives. */
  SIP_AUDIENCE: z.uuid().regex(/^[0-9a-f-]+$/, 'must be a lower-case UUID').optional(),
  SIP_USERNAME: z.string().min(1).max(256).optional(),
  SIP_PASSWORD: z.string().min(1).max(1024).optional(),
  SIP_EXPIRES: positiveInt.min(60).max(86_400).default(3600),
  /** Local address for the gateway's socket. */
  SIP_LOCAL_HOST: z.string().default('127.0.0.1'),
  // TLS to what the service connects to (the external broker, PostgreSQL,
  // the SIP server): PEM files read once at start (bin/outbound-tls-files.ts). The
  // server's certificate is always verified for MQTT and SIP; for
  // PostgreSQL as DATABASE_SSL says.
  MQTT_CA_FILE: z.string().min(1).optional(),
  MQTT_CERT_FILE: z.string().min(1).optional(),
  MQTT_KEY_FILE: z.string().min(1).optional(),
  /** disable | require (encrypted, certificate not checked) | verify-full; default below (databaseSslMode). */
  DATABASE_SSL: z.enum(DATABASE_SSL_MODES).optional(),
  DATABASE_CA_FILE: z.string().min(1).optional(),
  DATABASE_CERT_FILE: z.string().min(1).optional(),
  DATABASE_KEY_FILE: z.string().min(1).optional(),
  SIP_CA_FILE: z.string().min(1).optional(),
  SIP_CERT_FILE: z.string().min(1).optional(),
  SIP_KEY_FILE: z.string().min(1).optional(),
  /** Whether webhook URLs may be plain http (default: only outside production). */
  WEBHOOK_ALLOW_HTTP: z.enum(['true', 'false']).optional(),
  /**
   * Networks webhooks must never reach, beyond the built-in internal
   * ranges: the operator's own public addresses, which a router may loop
   * back inside (hairpin NAT). Comma-separated CIDRs.
   */
  WEBHOOK_REFUSE_NETWORKS: networkListSchema.optional(),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});

export type Env = Readonly<Record<string, string | undefined>>;

/** PEM files of one TLS client connection (paths; read at start). */
export interface TlsFiles {
  readonly caFile: string | undefined;
  readonly certFile: string | undefined;
  readonly keyFile: string | undefined;
}

export interface Config {
  readonly http: { readonly host: string; readonly port: number };
  readonly tls: TlsSetting;
  readonly dataDir: string;
  readonly database: { readonly kind: 'embedded' } | { readonly kind: 'postgres'; readonly url: string; readonly statementTimeoutMs: number };
  readonly mqtt:
    | {
        readonly kind: 'embedded';
        readonly host: string;
        readonly port: number;
        readonly topicRoot: string;
        readonly ownTracksRoot: string;
        readonly clientId: string | undefined;
      }
    | {
        readonly kind: 'external';
        readonly url: string;
        readonly username: string | undefined;
        readonly password: string | undefined;
        readonly topicRoot: string;
        readonly ownTracksRoot: string;
        readonly clientId: string | undefined;
        /** Refused messages are republished below this root, if set. */
        readonly deadLetterRoot: string | undefined;
        /** Who holds device credentials: the operator (a password file; `none`) or the service, through Mosquitto's dynamic security. */
        readonly deviceCredentials: 'none' | 'mosquitto-dynsec';
        /** MQTT_CLEAR_RETAINED: device messages the broker retains are removed there. */
        readonly clearRetained: boolean;
        /** MQTT_RETAINED_SWEEP_SECONDS, in ms (0: off). */
        readonly retainedSweepMs: number;
        /** Several processes on one broker and one database (MQTT_SHARE_GROUP). */
        readonly cluster: { readonly shareGroup: string; readonly syncRoot: string; readonly clientId: string } | undefined;
      };
  readonly signingKeyPem: string | undefined;
  readonly networkDigestKey: string | undefined;
  readonly tokenIssuer: string;
  /** METRICS_TOKEN: the bearer token /metrics requires, if any. */
  readonly metricsToken: string | undefined;
  /** NODE_ENV=production. */
  readonly production: boolean;
  readonly oidc: { readonly issuer: string; readonly audience: string; readonly jwksUrl: string | undefined; readonly algorithms: readonly string[]; readonly jwksCooldownMs: number; readonly jwksMaxAgeMs: number } | undefined;
  readonly presenceDomain: string;
  readonly offlineAfterMs: number;
  /** SIGNAL_RETENTION_HOURS: how long a silent device's last signals are kept. */
  readonly signalRetentionMs: number;
  readonly maxClockSkewMs: number;
  readonly maxEventBytes: number;
  readonly persistIntervalMs: number;
  /** INGEST_JOURNAL_FSYNC (a single process only: a group keeps no journal). */
  readonly ingestJournalFsync: boolean;
  readonly auditRetentionDays: number;
  readonly adminTokenMaxSeconds: number;
  readonly rawEventsMaxDays: number;
  readonly limits: {
    readonly httpAddress: RateLimit;
    readonly httpToken: RateLimit;
    readonly mqttDevice: RateLimit;
    readonly mqttConnect: RateLimit;
    readonly httpMaxBodyBytes: number;
    readonly httpMaxConnections: number;
    readonly httpMaxStreams: number;
    readonly httpMaxStreamsPerCaller: number;
    readonly mqttMaxConnections: number;
  };
  readonly webhookAllowHttp: boolean;
  /** Refused for webhooks whatever WEBHOOK_ALLOW_HTTP says (WEBHOOK_REFUSE_NETWORKS). */
  readonly webhookRefuseNetworks: readonly Network[];
  readonly sip:
    | {
        readonly server: string;
        readonly domain: string;
        readonly audience: string;
        readonly username: string | undefined;
        readonly password: string | undefined;
        readonly expires: number;
        readonly localHost: string;
      }
    | undefined;
  readonly logLevel: string;
  /**
   * TLS to what the service connects to. `mqtt`: set when MQTT_URL is
   * mqtts:// or wss://; `database`: set with DATABASE_URL; `sip`: set when
   * SIP_SERVER is a sips: URI or has ;transport=tls.
   */
  readonly outboundTls: {
    readonly mqtt: TlsFiles | undefined;
    readonly database: { readonly mode: DatabaseSslMode; readonly files: TlsFiles } | undefined;
    readonly sip: TlsFiles | undefined;
  };
}

/**
 * Inbound TLS: off (plain text, loopback development and tests only), the
 * operator's certificate files, or a certificate issued at start by a local
 * CA kept under DATA_DIR/tls for `names`.
 */
export type TlsSetting =
  | { readonly mode: 'off' }
  | { readonly mode: 'files'; readonly certFile: string; readonly keyFile: string }
  | { readonly mode: 'local'; readonly names: readonly string[] };

/** TLS variables: set together, and plain text only where nobody else can listen in. */
function tlsChecks(env: z.infer<typeof envSchema>): string[] {
  const problems: string[] = [];
  if ((env.TLS_CERT_FILE === undefined) !== (env.TLS_KEY_FILE === undefined)) problems.push('TLS_CERT_FILE and TLS_KEY_FILE: set both or neither');
  if (env.TLS === 'off') {
    if (env.TLS_CERT_FILE || env.TLS_KEY_FILE) problems.push('TLS_CERT_FILE/TLS_KEY_FILE: not used with TLS=off');
    // Device tokens, owner tokens and presence would cross the network in clear text.
    if (env.NODE_ENV === 'production') problems.push('TLS: off is refused when NODE_ENV=production');
    if (!isLoopback(env.HOST)) problems.push(`TLS: off is only allowed with a loopback HOST (127.0.0.1, ::1, localhost), not ${env.HOST}`);
    if (!env.MQTT_URL && !isLoopback(env.MQTT_HOST)) problems.push(`TLS: off is only allowed with a loopback MQTT_HOST (127.0.0.1, ::1, localhost), not ${env.MQTT_HOST}`);
  }
  return problems;
}

function tlsSetting(env: z.infer<typeof envSchema>): TlsSetting {
  if (env.TLS === 'off') return { mode: 'off' };
  if (env.TLS_CERT_FILE && env.TLS_KEY_FILE) return { mode: 'files', certFile: env.TLS_CERT_FILE, keyFile: env.TLS_KEY_FILE };
  return { mode: 'local', names: localCertificateNames(env.MQTT_URL ? [env.HOST] : [env.HOST, env.MQTT_HOST]) };
}

export type ConfigResult = { ok: true; config: Config } | { ok: false; problems: string[] };

/** Variables that only make sense with another one set. */
function crossChecks(env: z.infer<typeof envSchema>): string[] {
  const problems: string[] = [];
  if (!env.MQTT_URL && (env.MQTT_USERNAME || env.MQTT_PASSWORD)) {
    problems.push('MQTT_USERNAME/MQTT_PASSWORD: only used with MQTT_URL (an external broker)');
  }
  if (env.MQTT_PASSWORD && !env.MQTT_USERNAME) problems.push('MQTT_PASSWORD: needs MQTT_USERNAME');
  // Forgetting a device that still counts would change presence, not only what is kept.
  if (env.SIGNAL_RETENTION_HOURS * 3600 < env.OFFLINE_AFTER_SECONDS) problems.push('SIGNAL_RETENTION_HOURS: must be at least OFFLINE_AFTER_SECONDS');
  if (env.MQTT_DEVICE_CREDENTIALS !== 'none') {
    if (!env.MQTT_URL) problems.push('MQTT_DEVICE_CREDENTIALS: only used with MQTT_URL (the embedded broker checks device tokens itself)');
    if (!env.MQTT_USERNAME) problems.push('MQTT_DEVICE_CREDENTIALS: needs MQTT_USERNAME/MQTT_PASSWORD (a broker user with the dynamic-security role)');
  }
  if (env.MQTT_DEAD_LETTER_TOPIC) {
    if (!env.MQTT_URL) problems.push('MQTT_DEAD_LETTER_TOPIC: only used with MQTT_URL (the embedded broker lets no one subscribe)');
    const dl = `${env.MQTT_DEAD_LETTER_TOPIC}/`;
    for (const root of [env.MQTT_TOPIC_ROOT, env.OWNTRACKS_TOPIC_ROOT]) {
      if (dl.startsWith(`${root}/`) || `${root}/`.startsWith(dl)) problems.push(`MQTT_DEAD_LETTER_TOPIC: must not overlap ${root}/ (dead letters would be ingested again)`);
    }
  }
  // Secrets have no defaults in production: a key generated per process
  // would make every process refuse the others' tokens.
  if (env.NODE_ENV === 'production' && !env.SIGNING_KEY) problems.push('SIGNING_KEY: required when NODE_ENV=production');
  if ((env.OIDC_ISSUER === undefined) !== (env.OIDC_AUDIENCE === undefined)) problems.push('OIDC_ISSUER and OIDC_AUDIENCE: set both or neither');
  if (env.NODE_ENV === 'production' && env.OIDC_ISSUER?.startsWith('http:')) problems.push('OIDC_ISSUER: must be https when NODE_ENV=production');
  if (env.NODE_ENV === 'production' && env.OIDC_JWKS_URL?.startsWith('http:')) problems.push('OIDC_JWKS_URL: must be https when NODE_ENV=production');
  // A persistent session needs an id that is stable and unique per process;
  // a host name is neither (several processes per host, new hosts per deploy).
  if (env.NODE_ENV === 'production' && env.MQTT_URL && !env.MQTT_CLIENT_ID) problems.push('MQTT_CLIENT_ID: required with MQTT_URL when NODE_ENV=production');
  if (env.SIP_SERVER && !env.SIP_AUDIENCE) problems.push('SIP_AUDIENCE: required with SIP_SERVER (the watcher whose consent decides what the SIP server sees)');
  if (!env.SIP_SERVER && (env.SIP_AUDIENCE || env.SIP_USERNAME || env.SIP_DOMAIN)) problems.push('SIP_AUDIENCE/SIP_USERNAME/SIP_DOMAIN: only used with SIP_SERVER');
  if ((env.SIP_USERNAME === undefined) !== (env.SIP_PASSWORD === undefined)) problems.push('SIP_USERNAME/SIP_PASSWORD: set both or neither');
  if (env.MQTT_SHARE_GROUP) {
    // Each process needs its own persistent session (its share of device
    // messages and the sync topic wait there while it restarts), and the
    // processes meet in one database: PGlite lives inside one process.
    if (!env.MQTT_URL) problems.push('MQTT_SHARE_GROUP: needs MQTT_URL (several processes share an external broker)');
    if (!env.MQTT_CLIENT_ID) problems.push('MQTT_SHARE_GROUP: needs MQTT_CLIENT_ID, stable across restarts and unique per process');
    if (!env.DATABASE_URL) problems.push('MQTT_SHARE_GROUP: needs DATABASE_URL (the embedded database serves one process)');
    if (env.INGEST_JOURNAL_FSYNC === 'true') problems.push('INGEST_JOURNAL_FSYNC: a group keeps no ingest journal (the other processes hold what one had not stored)');
    const sync = `${env.MQTT_SYNC_TOPIC}/`;
    for (const [name, root] of [['MQTT_TOPIC_ROOT', env.MQTT_TOPIC_ROOT], ['OWNTRACKS_TOPIC_ROOT', env.OWNTRACKS_TOPIC_ROOT], ['MQTT_DEAD_LETTER_TOPIC', env.MQTT_DEAD_LETTER_TOPIC]] as const) {
      if (root !== undefined && (sync.startsWith(`${root}/`) || `${root}/`.startsWith(sync))) problems.push(`MQTT_SYNC_TOPIC: must not overlap ${name}`);
    }
  }
  // PGlite runs inside this process, one statement at a time: no other
  // session can hold its locks, and a stall there stalls the process anyway.
  if (!env.DATABASE_URL && env.DATABASE_STATEMENT_TIMEOUT_MS !== undefined) problems.push('DATABASE_STATEMENT_TIMEOUT_MS: only used with DATABASE_URL');
  problems.push(...outboundTlsProblems(env));
  const native = `${env.MQTT_TOPIC_ROOT}/`;
  const owntracks = `${env.OWNTRACKS_TOPIC_ROOT}/`;
  if (native.startsWith(owntracks) || owntracks.startsWith(native)) problems.push('OWNTRACKS_TOPIC_ROOT: must not overlap MQTT_TOPIC_ROOT');
  return problems;
}

export function parseConfig(source: Env): ConfigResult {
  // Empty strings mean "unset": shells and compose files often export VAR=.
  const cleaned: Record<string, string> = {};
  for (const key of Object.keys(envSchema.shape)) {
    const value = source[key];
    if (value !== undefined && value !== '') cleaned[key] = value;
  }
  const parsed = envSchema.safeParse(cleaned);
  if (!parsed.success) {
    return {
      ok: false,
      problems: parsed.error.issues.map((issue) => `${issue.path.join('.') || '(env)'}: ${issue.message}`),
    };
  }
  const e = parsed.data;
  const problems = [...crossChecks(e), ...tlsChecks(e)];
  if (problems.length > 0) return { ok: false, problems };

  const config: Config = {
    http: { host: e.HOST, port: e.PORT },
    tls: tlsSetting(e),
    dataDir: e.DATA_DIR,
    database: e.DATABASE_URL
      ? { kind: 'postgres', url: e.DATABASE_URL, statementTimeoutMs: e.DATABASE_STATEMENT_TIMEOUT_MS ?? DEFAULT_DATABASE_STATEMENT_TIMEOUT_MS }
      : { kind: 'embedded' },
    mqtt: e.MQTT_URL
      ? {
          kind: 'external',
          url: e.MQTT_URL,
          username: e.MQTT_USERNAME,
          password: e.MQTT_PASSWORD,
          topicRoot: e.MQTT_TOPIC_ROOT,
          ownTracksRoot: e.OWNTRACKS_TOPIC_ROOT,
          clientId: e.MQTT_CLIENT_ID,
          deadLetterRoot: e.MQTT_DEAD_LETTER_TOPIC,
          deviceCredentials: e.MQTT_DEVICE_CREDENTIALS,
          clearRetained: e.MQTT_CLEAR_RETAINED === 'true',
          retainedSweepMs: e.MQTT_RETAINED_SWEEP_SECONDS * 1000,
          cluster: e.MQTT_SHARE_GROUP && e.MQTT_CLIENT_ID ? { shareGroup: e.MQTT_SHARE_GROUP, syncRoot: e.MQTT_SYNC_TOPIC, clientId: e.MQTT_CLIENT_ID } : undefined,
        }
      : {
          kind: 'embedded',
          host: e.MQTT_HOST,
          port: e.MQTT_PORT,
          topicRoot: e.MQTT_TOPIC_ROOT,
          ownTracksRoot: e.OWNTRACKS_TOPIC_ROOT,
          clientId: e.MQTT_CLIENT_ID,
        },
    signingKeyPem: e.SIGNING_KEY,
    networkDigestKey: e.NETWORK_DIGEST_KEY,
    tokenIssuer: e.TOKEN_ISSUER,
    metricsToken: e.METRICS_TOKEN,
    production: e.NODE_ENV === 'production',
    oidc:
      e.OIDC_ISSUER && e.OIDC_AUDIENCE
        ? { issuer: e.OIDC_ISSUER, audience: e.OIDC_AUDIENCE, jwksUrl: e.OIDC_JWKS_URL, algorithms: e.OIDC_ALGORITHMS.split(','), jwksCooldownMs: e.OIDC_JWKS_COOLDOWN_SECONDS * 1000, jwksMaxAgeMs: e.OIDC_JWKS_MAX_AGE_SECONDS * 1000 }
        : undefined,
    presenceDomain: e.PRESENCE_DOMAIN,
    offlineAfterMs: e.OFFLINE_AFTER_SECONDS * 1000,
    signalRetentionMs: e.SIGNAL_RETENTION_HOURS * 3_600_000,
    maxClockSkewMs: e.MAX_CLOCK_SKEW_SECONDS * 1000,
    maxEventBytes: e.MAX_EVENT_BYTES,
    persistIntervalMs: e.PERSIST_INTERVAL_MS,
    ingestJournalFsync: e.INGEST_JOURNAL_FSYNC === 'true',
    auditRetentionDays: e.AUDIT_RETENTION_DAYS,
    adminTokenMaxSeconds: e.ADMIN_TOKEN_MAX_SECONDS,
    rawEventsMaxDays: e.RAW_EVENTS_MAX_DAYS,
    limits: {
      httpAddress: e.RATE_LIMIT_HTTP_ADDRESS,
      httpToken: e.RATE_LIMIT_HTTP_TOKEN,
      mqttDevice: e.RATE_LIMIT_MQTT_DEVICE,
      mqttConnect: e.RATE_LIMIT_MQTT_CONNECT,
      httpMaxBodyBytes: e.HTTP_MAX_BODY_BYTES,
      httpMaxConnections: e.HTTP_MAX_CONNECTIONS,
      httpMaxStreams: e.HTTP_MAX_STREAMS,
      httpMaxStreamsPerCaller: e.HTTP_MAX_STREAMS_PER_CALLER,
      mqttMaxConnections: e.MQTT_MAX_CONNECTIONS,
    },
    sip:
      e.SIP_SERVER && e.SIP_AUDIENCE
        ? {
            server: e.SIP_SERVER,
            domain: e.SIP_DOMAIN ?? e.PRESENCE_DOMAIN,
            audience: e.SIP_AUDIENCE,
            username: e.SIP_USERNAME,
            password: e.SIP_PASSWORD,
            expires: e.SIP_EXPIRES,
            localHost: e.SIP_LOCAL_HOST,
          }
        : undefined,
    webhookAllowHttp: e.WEBHOOK_ALLOW_HTTP === undefined ? e.NODE_ENV !== 'production' : e.WEBHOOK_ALLOW_HTTP === 'true',
    webhookRefuseNetworks: e.WEBHOOK_REFUSE_NETWORKS ?? [],
    logLevel: e.LOG_LEVEL,
    outboundTls: {
      mqtt: e.MQTT_URL && isTlsMqttUrl(e.MQTT_URL) ? { caFile: e.MQTT_CA_FILE, certFile: e.MQTT_CERT_FILE, keyFile: e.MQTT_KEY_FILE } : undefined,
      database: e.DATABASE_URL
        ? { mode: databaseSslMode(e.DATABASE_URL, e.DATABASE_SSL, e.DATABASE_CA_FILE), files: { caFile: e.DATABASE_CA_FILE, certFile: e.DATABASE_CERT_FILE, keyFile: e.DATABASE_KEY_FILE } }
        : undefined,
      sip: e.SIP_SERVER && isTlsSipServer(e.SIP_SERVER) ? { caFile: e.SIP_CA_FILE, certFile: e.SIP_CERT_FILE, keyFile: e.SIP_KEY_FILE } : undefined,
    },
  };
  return { ok: true, config: deepFreeze(config) };
}


// ---- TLS to the broker, the database and the SIP server ----

const isTlsMqttUrl = (url: string): boolean => ['mqtts:', 'ssl:', 'wss:'].includes(new URL(url).protocol);

/** RFC 3261 §19.1 / §26.2: a sips: URI, or a sip: URI with ;transport=tls (deprecated by RFC 5630, still common). */
const isTlsSipServer = (uri: string): boolean => /^sips:/i.test(uri) || /;transport=tls(?=;|$)/i.test(uri);

/** Connection-string parameters that would make the driver pick TLS settings or read files behind our back. */
const URL_TLS_FILES = ['sslrootcert', 'sslcert', 'sslkey', 'sslcrl', 'sslpassword'] as const;

/**
 * DATABASE_SSL, else `verify-full` when DATABASE_CA_FILE is given, else the
 * URL's sslmode, else `disable` (the driver's default: plain TCP). Only
 * called once crossChecks accepted the combination.
 */
export function databaseSslMode(url: string, configured: DatabaseSslMode | undefined, caFile: string | undefined): DatabaseSslMode {
  if (configured) return configured;
  if (caFile) return 'verify-full';
  const sslmode = new URL(url).searchParams.get('sslmode');
  return sslmode === 'require' || sslmode === 'verify-full' ? sslmode : 'disable';
}

function outboundTlsProblems(env: z.infer<typeof envSchema>): string[] {
  const problems: string[] = [];
  const pair = (cert: string, key: string, certValue: string | undefined, keyValue: string | undefined) => {
    if ((certValue === undefined) !== (keyValue === undefined)) problems.push(`${cert}/${key}: set both or neither`);
  };

  const mqttFiles = env.MQTT_CA_FILE ?? env.MQTT_CERT_FILE ?? env.MQTT_KEY_FILE;
  if (mqttFiles !== undefined) {
    if (!env.MQTT_URL) problems.push('MQTT_CA_FILE/MQTT_CERT_FILE/MQTT_KEY_FILE: only used with MQTT_URL (an external broker)');
    else if (!isTlsMqttUrl(env.MQTT_URL)) problems.push('MQTT_CA_FILE/MQTT_CERT_FILE/MQTT_KEY_FILE: MQTT_URL does not use TLS (use mqtts:// or wss://)');
  }
  pair('MQTT_CERT_FILE', 'MQTT_KEY_FILE', env.MQTT_CERT_FILE, env.MQTT_KEY_FILE);

  const databaseSettings = env.DATABASE_SSL ?? env.DATABASE_CA_FILE ?? env.DATABASE_CERT_FILE ?? env.DATABASE_KEY_FILE;
  if (!env.DATABASE_URL) {
    if (databaseSettings !== undefined) problems.push('DATABASE_SSL/DATABASE_CA_FILE/DATABASE_CERT_FILE/DATABASE_KEY_FILE: only used with DATABASE_URL');
  } else {
    const params = new URL(env.DATABASE_URL).searchParams;
    for (const name of URL_TLS_FILES) {
      if (params.has(name)) problems.push(`DATABASE_URL: ${name} is not supported; use DATABASE_CA_FILE, DATABASE_CERT_FILE and DATABASE_KEY_FILE`);
    }
    if (params.has('ssl') || params.has('uselibpqcompat')) problems.push('DATABASE_URL: use sslmode (or DATABASE_SSL), not ssl= or uselibpqcompat=');
    const sslmode = params.get('sslmode');
    if (sslmode !== null && !(DATABASE_SSL_MODES as readonly string[]).includes(sslmode)) {
      // libpq's prefer/allow fall back to plain text, and verify-ca skips the
      // host name check: neither is offered, so no one gets them unknowingly.
      problems.push(`DATABASE_URL: sslmode=${sslmode} is not supported; use disable, require or verify-full (or DATABASE_SSL)`);
    } else if (sslmode !== null && env.DATABASE_SSL !== undefined && sslmode !== env.DATABASE_SSL) {
      problems.push(`DATABASE_SSL=${env.DATABASE_SSL} contradicts sslmode=${sslmode} in DATABASE_URL: keep one`);
    }
    const mode = databaseSslMode(env.DATABASE_URL, env.DATABASE_SSL, env.DATABASE_CA_FILE);
    if (env.DATABASE_CA_FILE && mode !== 'verify-full') problems.push(`DATABASE_CA_FILE: only used with DATABASE_SSL=verify-full (${mode} does not check the server's certificate)`);
    if ((env.DATABASE_CERT_FILE || env.DATABASE_KEY_FILE) && mode === 'disable') problems.push('DATABASE_CERT_FILE/DATABASE_KEY_FILE: need TLS (DATABASE_SSL=require or verify-full)');
  }
  pair('DATABASE_CERT_FILE', 'DATABASE_KEY_FILE', env.DATABASE_CERT_FILE, env.DATABASE_KEY_FILE);

  const sipFiles = env.SIP_CA_FILE ?? env.SIP_CERT_FILE ?? env.SIP_KEY_FILE;
  if (sipFiles !== undefined) {
    if (!env.SIP_SERVER) problems.push('SIP_CA_FILE/SIP_CERT_FILE/SIP_KEY_FILE: only used with SIP_SERVER');
    else if (!isTlsSipServer(env.SIP_SERVER)) problems.push('SIP_CA_FILE/SIP_CERT_FILE/SIP_KEY_FILE: SIP_SERVER does not use TLS (use a sips: URI or ;transport=tls)');
  }
  pair('SIP_CERT_FILE', 'SIP_KEY_FILE', env.SIP_CERT_FILE, env.SIP_KEY_FILE);
  return problems;
}
