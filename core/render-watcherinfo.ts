import { escapeXml } from './render-pidf.js';

/**
 * Renders watcher information (RFC 3858 format, RFC 3857 event
 * template-package) for the owner's presentity: who watches, and where each
 * subscription stands. Template strings with escaping, like render-pidf.ts;
 * the attribute names and types follow the official watcherinfo.xsd
 * (../shared/schemas/xsd/watcherinfo.xsd, RFC 3858 §6):
 *
 *   <watcherinfo> version (xs:nonNegativeInteger, required), state
 *     (full | partial, required); content: <watcher-list>*
 *   <watcher-list> resource (xs:anyURI, required), package (xs:string,
 *     required); content: <watcher>*
 *   <watcher> content: the watcher's URI (xs:anyURI); attributes id
 *     (xs:string, required), status and event (enumerations, required),
 *     display-name (xs:string), expiration and duration-subscribed
 *     (xs:unsignedLong, seconds), xml:lang.
 *
 * There is no `net-id` attribute in the schema, so none is rendered.
 *
 * RFC 3857 subscription state machine (watcher status = the state the
 * subscription is in, watcher event = the transition that led there):
 *
 *   init    --subscribe, no policy yet------------------> pending
 *   init    --subscribe, policy accepts-----------------> active
 *   init    --subscribe, policy rejects-----------------> terminated
 *   pending --approved (owner grants)-------------------> active
 *   pending --rejected (owner refuses)------------------> terminated
 *   pending --timeout (subscription expired unanswered)--> waiting
 *   pending --giveup (server stops waiting for policy)--> terminated
 *   pending --deactivated | probation | noresource------> terminated
 *   waiting --approved | rejected (policy set late)-----> terminated
 *   waiting --giveup | noresource-----------------------> terminated
 *   active  --deactivated (discarded, retry now)--------> terminated
 *   active  --probation (discarded, retry later)--------> terminated
 *   active  --rejected (authorization revoked)----------> terminated
 *   active  --timeout (not refreshed)-------------------> terminated
 *   active  --noresource (presentity gone)--------------> terminated
 *
 * `waiting` keeps a subscription that expired while pending, so the owner can
 * still see, later, that someone tried; a waiting subscription never becomes
 * active again (the watcher has to subscribe anew). This renderer does not
 * enforce the machine: it renders whatever status/event pair it is given,
 * all of which the schema accepts.
 */
export const WATCHERINFO_MEDIA_TYPE = 'application/watcherinfo+xml';
const NS_WATCHERINFO = 'urn:ietf:params:xml:ns:watcherinfo';

export type WatcherStatus = 'pending' | 'active' | 'waiting' | 'terminated';
export type WatcherEvent = 'subscribe' | 'approved' | 'deactivated' | 'probation' | 'rejected' | 'timeout' | 'giveup' | 'noresource';

export interface WatcherInfoEntry {
  /** Stable per subscription (RFC 3858 §3); a UUID is rendered as `w-<uuid>`. */
  readonly id: string;
  /** The watcher's URI, e.g. urn:uuid:... */
  readonly uri: string;
  readonly displayName?: string | undefined;
  readonly status: WatcherStatus;
  readonly event: WatcherEvent;
  /** Seconds the subscription has existed (`duration-subscribed`). */
  readonly durationSubscribedSeconds?: number | undefined;
  /** Seconds until the subscription expires (`expiration`). */
  readonly expiresSeconds?: number | undefined;
}

export interface WatcherInfoInput {
  /** The owner's presentity URI, e.g. pres:alice@example.com. */
  readonly resource: string;
  /** RFC 3858 §4: increases by one with every document sent on a subscription. */
  readonly version: number;
  readonly state: 'full' | 'partial';
  readonly watchers: readonly WatcherInfoEntry[];
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * A UUID may start with a digit, which an xs:ID / NCName may not; prefix it
 * so the id stays usable as one (the schema itself only asks for a string).
 */
export function watcherElementId(id: string): string {
  return UUID.test(id) ? `w-${id}` : id;
}

/**
 * Characters XML 1.0 cannot carry at all (C0 controls other than tab, LF and
 * CR; lone surrogates; U+FFFE/U+FFFF) are dropped; tab, LF and CR in
 * attributes become character references so attribute-value normalization
 * does not turn them into spaces.
 */
// eslint-disable-next-line no-control-regex
const NOT_XML_CHAR = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

function text(value: string): string {
  return escapeXml(value.replace(NOT_XML_CHAR, ''));
}

function attr(value: string): string {
  return text(value).replace(/[\t\n\r]/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** xs:unsignedLong seconds: whole, never negative (an expiry already past is 0). */
function seconds(name: string, value: number): string {
  if (!Number.isFinite(value)) throw new RangeError(`${name} must be a finite number of seconds, got ${value}`);
  return String(Math.max(0, Math.floor(value)));
}

function renderWatcher(w: WatcherInfoEntry): string {
  let attributes = `id="${attr(watcherElementId(w.id))}" status="${w.status}" event="${w.event}"`;
  if (w.displayName !== undefined) attributes += ` display-name="${attr(w.displayName)}"`;
  if (w.durationSubscribedSeconds !== undefined) attributes += ` duration-subscribed="${seconds('durationSubscribedSeconds', w.durationSubscribedSeconds)}"`;
  if (w.expiresSeconds !== undefined) attributes += ` expiration="${seconds('expiresSeconds', w.expiresSeconds)}"`;
  return `<watcher ${attributes}>${text(w.uri)}</watcher>`;
}

export function renderWatcherInfo(input: WatcherInfoInput): string {
  if (!Number.isSafeInteger(input.version) || input.version < 0) throw new RangeError(`version must be a non-negative integer, got ${input.version}`);
  return (
    `<?xml version="1.0" encoding="UTF-8"?>\n` +
    `<watcherinfo xmlns="${NS_WATCHERINFO}" version="${input.version}" state="${input.state}">` +
    `<watcher-list resource="${attr(input.resource)}" package="presence">` +
    input.watchers.map(renderWatcher).join('') +
    `</watcher-list></watcherinfo>\n`
  );
}
