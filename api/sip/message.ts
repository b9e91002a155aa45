import { randomBytes } from 'node:crypto';

/**
 * SIP message building and parsing (RFC 3261 §7, §20, §25), only as much as
 * a PUBLISH client needs: it builds requests and parses what comes back.
 *
 * Parsing never throws: it returns a result whose error is a typed
 * {@link SipParseError}, so hostile input on a socket cannot escape a
 * transport as an exception.
 */

/** Largest message accepted or built (UDP's own limit is 65,507 bytes of payload). */
export const MAX_MESSAGE_BYTES = 64 * 1024;
/** More header fields than a PUBLISH response ever needs; bounds the parse work. */
export const MAX_HEADER_FIELDS = 256;

/** RFC 3261 §8.1.1.7: a branch starting with this magic cookie marks an RFC 3261 transaction. */
export const BRANCH_MAGIC_COOKIE = 'z9hG4bK';

export type SipParseErrorCode =
  | 'too-large'
  | 'no-header-end'
  | 'bad-start-line'
  | 'bad-status-code'
  | 'bad-header'
  | 'too-many-headers'
  | 'bad-content-length'
  | 'truncated-body'
  | 'missing-header';

export class SipParseError extends Error {
  override readonly name = 'SipParseError';
  constructor(
    readonly code: SipParseErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export type ParseResult<T> = { readonly ok: true; readonly value: T } | { readonly ok: false; readonly error: SipParseError };

/** RFC 3261 §7.3.3 compact forms (and RFC 3265 §7.2 `o`/`u`, RFC 3515 `r`, RFC 4028 `x`). */
const COMPACT_FORMS: Readonly<Record<string, string>> = {
  v: 'via',
  f: 'from',
  t: 'to',
  i: 'call-id',
  l: 'content-length',
  c: 'content-type',
  e: 'content-encoding',
  m: 'contact',
  k: 'supported',
  s: 'subject',
  o: 'event',
  u: 'allow-events',
  r: 'refer-to',
  x: 'session-expires',
};

/** Canonical (lower-case, long-form) name of a header field. RFC 3261 §7.3.1: names are case-insensitive. */
export function canonicalHeaderName(name: string): string {
  const lower = name.toLowerCase();
  return COMPACT_FORMS[lower] ?? lower;
}

/** Header fields of a parsed message: case-insensitive, compact forms folded into long forms, repeated fields kept in order. */
export class SipHeaders {
  private readonly fields = new Map<string, string[]>();

  add(name: string, value: string): void {
    const key = canonicalHeaderName(name);
    const list = this.fields.get(key);
    if (list) list.push(value);
    else this.fields.set(key, [value]);
  }

  /** The first field of that name, if any. */
  get(name: string): string | undefined {
    return this.fields.get(canonicalHeaderName(name))?.[0];
  }

  /** Every field of that name, one entry per header line (RFC 3261 §7.3.1: comma-joined lists are not split here, see {@link splitHeaderList}). */
  getAll(name: string): readonly string[] {
    return this.fields.get(canonicalHeaderName(name)) ?? [];
  }

  has(name: string): boolean {
    return this.fields.has(canonicalHeaderName(name));
  }

  get size(): number {
    let n = 0;
    for (const list of this.fields.values()) n += list.length;
    return n;
  }
}

interface MessageBase {
  readonly headers: SipHeaders;
  readonly body: Buffer;
}

export interface SipResponse extends MessageBase {
  readonly kind: 'response';
  readonly status: number;
  readonly reason: string;
}

export interface SipRequest extends MessageBase {
  readonly kind: 'request';
  readonly method: string;
  readonly uri: string;
}

export type SipMessage = SipResponse | SipRequest;

export interface ParseOptions {
  /** Bound on the whole message (default {@link MAX_MESSAGE_BYTES}). */
  readonly maxBytes?: number;
  /**
   * RFC 3261 §18.3: over a stream transport Content-Length is mandatory and
   * frames the message; over UDP it may be absent (the body is the rest of the
   * datagram) and bytes beyond it are discarded.
   */
  readonly stream?: boolean;
}

const fail = (code: SipParseErrorCode, message: string): { ok: false; error: SipParseError } => ({ ok: false, error: new SipParseError(code, message) });

/** RFC 3261 §25.1 token characters (methods, header names). */
/** RFC 3261 §25.1 token. */
export const TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]+$/;
const STATUS_LINE = /^SIP\/2\.0 ([0-9]{3}) ([^\r\n]*)$/;
const REQUEST_LINE = /^([A-Za-z0-9\-.!%*_+`'~]+) ([^ \r\n]+) SIP\/2\.0$/;

/** Position of the blank line ending the header section, and how long the separator is (CRLFCRLF, or bare LFLF from sloppy peers). */
export function findHeaderEnd(data: Buffer): { readonly index: number; readonly length: number } | undefined {
  const crlf = data.indexOf('\r\n\r\n');
  const lf = data.indexOf('\n\n');
  let found: { index: number; length: number } | undefined;
  if (crlf >= 0 && (lf < 0 || crlf <= lf)) found = { index: crlf, length: 4 };
  else if (lf >= 0) found = { index: lf, length: 2 };
  return found;
}

/** Parses a Content-Length value (RFC 3261 §20.14: 1*DIGIT). */
export function parseContentLength(value: string | undefined): number | undefined | 'invalid' {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (!/^[0-9]{1,9}$/.test(trimmed)) return 'invalid';
  return Number(trimmed);
}

/**
 * Where the header section (start line and header fields, without the
 * empty line that ends it) holds a control character, or -1. RFC 3261
 * §25.1 allows none in a header field (TEXT-UTF8, quoted-string and tokens
 * exclude CTL; only HTAB is white space); CR and LF only as the CRLF that
 * ends a line (a bare LF is tolerated, as everywhere here). A bare CR is
 * refused because it would end a line for one reader and not another
 * (JavaScript's multiline `^` matches after it), and anything taken from
 * a response may be sent back (a digest challenge's nonce and realm are
 * quoted into the next request's Authorization).
 */
export function controlCharacterIn(head: string): number {
  for (let i = 0; i < head.length; i++) {
    const c = head.charCodeAt(i);
    if (c >= 0x20 && c !== 0x7f) continue;
    if (c === 0x09 || c === 0x0a) continue;
    if (c === 0x0d && head.charCodeAt(i + 1) === 0x0a) continue;
    return i;
  }
  return -1;
}

/**
 * Parses one SIP message (request or response). Never throws; everything
 * wrong with the input comes back as a {@link SipParseError}.
 */
export function parseMessage(data: Buffer, options: ParseOptions = {}): ParseResult<SipMessage> {
  const maxBytes = options.maxBytes ?? MAX_MESSAGE_BYTES;
  if (data.length > maxBytes) return fail('too-large', `message of ${data.length} bytes exceeds ${maxBytes}`);
  // RFC 3261 §7.5: a sender may precede the start line with CRLFs; skip them.
  let start = 0;
  while (start < data.length && (data[start] === 0x0d || data[start] === 0x0a)) start++;
  const body0 = data.subarray(start);
  const end = findHeaderEnd(body0);
  if (!end) return fail('no-header-end', 'no empty line ends the header section');
  // Header values are UTF-8 (RFC 3261 §7.3.1 TEXT-UTF8); the end was found on bytes.
  const head = body0.subarray(0, end.index).toString('utf8');
  const lines = head.split(/\r?\n/);
  const startLine = lines.shift() ?? '';

  let first: { kind: 'response'; status: number; reason: string } | { kind: 'request'; method: string; uri: string };
  const status = STATUS_LINE.exec(startLine);
  if (status) {
    const code = Number(status[1]);
    // RFC 3261 §7.2 / §21: status codes are 1xx to 6xx.
    if (code < 100 || code > 699) return fail('bad-status-code', `status code ${code} is outside 100-699`);
    first = { kind: 'response', status: code, reason: status[2] ?? '' };
  } else if (startLine.startsWith('SIP/')) {
    return fail(/^SIP\/2\.0 /.test(startLine) ? 'bad-status-code' : 'bad-start-line', `malformed status line: ${JSON.stringify(startLine.slice(0, 80))}`);
  } else {
    const request = REQUEST_LINE.exec(startLine);
    if (!request) return fail('bad-start-line', `malformed start line: ${JSON.stringify(startLine.slice(0, 80))}`);
    first = { kind: 'request', method: request[1] ?? '', uri: request[2] ?? '' };
  }

  const control = controlCharacterIn(head);
  if (control !== -1) return fail('bad-header', `control character U+${head.charCodeAt(control).toString(16).toUpperCase().padStart(4, '0')} in the header section (RFC 3261 §25.1)`);

  // RFC 3261 §7.3.1: header fields; a line starting with SP or HT continues
  // (folds) the previous one.
  const headers = new SipHeaders();
  let pending: { name: string; value: string } | undefined;
  let count = 0;
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) {
      if (!pending) return fail('bad-header', 'continuation line before any header field');
      pending.value = pending.value === '' ? line.trim() : `${pending.value} ${line.trim()}`;
      continue;
    }
    if (pending) headers.add(pending.name, pending.value);
    const colon = line.indexOf(':');
    if (colon <= 0) return fail('bad-header', `header line without a name: ${JSON.stringify(line.slice(0, 80))}`);
    const name = line.slice(0, colon).trimEnd();
    if (!TOKEN.test(name)) return fail('bad-header', `invalid header name: ${JSON.stringify(name.slice(0, 80))}`);
    if (++count > MAX_HEADER_FIELDS) return fail('too-many-headers', `more than ${MAX_HEADER_FIELDS} header fields`);
    pending = { name, value: line.slice(colon + 1).trim() };
  }
  if (pending) headers.add(pending.name, pending.value);
  // One of each of these, or the message is ambiguous (and two Content-Lengths invite smuggling).
  for (const name of ['from', 'to', 'call-id', 'cseq', 'content-length']) {
    if (headers.getAll(name).length > 1) return fail('bad-header', `more than one ${name} header field`);
  }
  const lengths = headers.getAll('content-length');
  const contentLength = parseContentLength(lengths[0]);
  if (contentLength === 'invalid') return fail('bad-content-length', `Content-Length is not a number: ${JSON.stringify((lengths[0] ?? '').slice(0, 40))}`);

  const available = body0.subarray(end.index + end.length);
  let body: Buffer;
  if (contentLength === undefined) {
    if (options.stream) return fail('bad-content-length', 'Content-Length is mandatory over a stream transport (RFC 3261 §18.3)');
    body = available;
  } else {
    if (contentLength > available.length) return fail('truncated-body', `Content-Length ${contentLength} exceeds the ${available.length} bytes that follow`);
    body = available.subarray(0, contentLength);
  }
  for (const name of ['call-id', 'cseq', 'from', 'to', 'via']) {
    if (!headers.has(name)) return fail('missing-header', `required header field ${name} is missing (RFC 3261 §8.1.1)`);
  }
  if (!parseCSeq(headers.get('cseq'))) return fail('bad-header', `malformed CSeq: ${JSON.stringify((headers.get('cseq') ?? '').slice(0, 40))}`);
  return { ok: true, value: first.kind === 'response' ? { ...first, headers, body } : { ...first, headers, body } };
}

/** Parses a message that must be a response. */
export function parseResponse(data: Buffer, options: ParseOptions = {}): ParseResult<SipResponse> {
  const result = parseMessage(data, options);
  if (!result.ok) return result;
  if (result.value.kind !== 'response') return fail('bad-start-line', `expected a response, got a ${result.value.method} request`);
  return { ok: true, value: result.value };
}

/** RFC 3261 §20.16 CSeq: sequence number and method. */
export function parseCSeq(value: string | undefined): { readonly seq: number; readonly method: string } | undefined {
  if (value === undefined) return undefined;
  const match = /^([0-9]{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)$/.exec(value.trim());
  if (!match) return undefined;
  const seq = Number(match[1]);
  // RFC 3261 §8.1.1.5: the sequence number must be less than 2**31.
  if (seq >= 2 ** 31) return undefined;
  return { seq, method: match[2] ?? '' };
}

/** Splits a comma-separated header value (RFC 3261 §7.3.1), not inside quotes or angle brackets. */
export function splitHeaderList(value: string): string[] {
  const parts: string[] = [];
  let current = '';
  let quoted = false;
  let angle = false;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (quoted) {
      current += ch;
      if (ch === '\\' && i + 1 < value.length) current += value[++i];
      else if (ch === '"') quoted = false;
    } else if (ch === '"') {
      quoted = true;
      current += ch;
    } else if (ch === '<') {
      angle = true;
      current += ch;
    } else if (ch === '>') {
      angle = false;
      current += ch;
    } else if (ch === ',' && !angle) {
      if (current.trim()) parts.push(current.trim());
      current = '';
    } else current += ch;
  }
  if (current.trim()) parts.push(current.trim());
  return parts;
}

/** Header parameters `;name=value` after the first `;` outside quotes and angle brackets (RFC 3261 §7.3.1, §20.42). Names lower-cased. */
export function headerParams(value: string): Map<string, string> {
  const params = new Map<string, string>();
  let depth = 0;
  let quoted = false;
  let startAt = -1;
  for (let i = 0; i < value.length; i++) {
    const ch = value[i];
    if (quoted) {
      if (ch === '\\') i++;
      else if (ch === '"') quoted = false;
    } else if (ch === '"') quoted = true;
    else if (ch === '<') depth++;
    else if (ch === '>') depth = Math.max(0, depth - 1);
    else if (ch === ';' && depth === 0) {
      startAt = i;
      break;
    }
  }
  if (startAt < 0) return params;
  for (const part of value.slice(startAt + 1).split(';')) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    if (!name) continue;
    let v = eq < 0 ? '' : part.slice(eq + 1).trim();
    if (v.startsWith('"') && v.endsWith('"') && v.length >= 2) v = v.slice(1, -1);
    params.set(name, v);
  }
  return params;
}

/** The branch parameter of the topmost Via (RFC 3261 §17.1.3 transaction matching). */
export function topViaBranch(headers: SipHeaders): string | undefined {
  const first = headers.getAll('via')[0];
  if (first === undefined) return undefined;
  const top = splitHeaderList(first)[0];
  return top === undefined ? undefined : headerParams(top).get('branch');
}

/**
 * The sent-by of the topmost Via, as `host:port` in lower case, the port
 * filled in from the transport's default when absent (RFC 3261 §18.1.2,
 * §19.1.2: 5060, 5061 for TLS); undefined if there is none or it does not
 * parse. LWS around the slashes and the colon is allowed (§20.42, §25.1).
 */
export function topViaSentBy(headers: SipHeaders): string | undefined {
  const first = headers.getAll('via')[0];
  if (first === undefined) return undefined;
  const top = splitHeaderList(first)[0];
  if (top === undefined) return undefined;
  const semicolon = top.indexOf(';');
  const head = (semicolon < 0 ? top : top.slice(0, semicolon)).trim();
  const match = /^SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z0-9.!%*_+`'~-]+)\s+(.+)$/i.exec(head);
  if (!match) return undefined;
  const transport = (match[1] ?? '').toUpperCase();
  const sentBy = (match[2] ?? '').trim().replace(/\s*:\s*/g, ':').toLowerCase();
  // An IPv6 reference may carry a zone (`%eth0`) when the local address has one: what was sent is what must come back.
  const parts = /^(\[[0-9a-f:.]+(?:%[0-9a-z._~-]+)?\]|[a-z0-9.-]+)(?::([0-9]{1,5}))?$/.exec(sentBy);
  if (!parts) return undefined;
  const port = parts[2] === undefined ? (transport === 'TLS' ? 5061 : 5060) : Number(parts[2]);
  return `${parts[1]}:${port}`;
}

/** The sent-by this client puts in its Via (buildRequest), in the form topViaSentBy() returns. */
export function sentByOf(host: string, port: number): string {
  return hostPort(host, port).toLowerCase();
}

/** Parses an Expires / Min-Expires value (RFC 3261 §20.19: delta-seconds). */
export function parseDeltaSeconds(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (!/^[0-9]{1,10}$/.test(trimmed)) return undefined;
  const n = Number(trimmed);
  // RFC 3261 §20.19: values above 2**32-1 are treated as 2**32-1.
  return Math.min(n, 2 ** 32 - 1);
}

// ---------------------------------------------------------------- building

export class SipBuildError extends Error {
  override readonly name = 'SipBuildError';
}

export interface NameAddr {
  readonly uri: string;
  readonly tag?: string;
}

/** What a client puts in a request; the transport adds the Via (it knows its own address). */
export interface SipRequestSpec {
  readonly method: string;
  readonly requestUri: string;
  readonly from: NameAddr;
  readonly to: NameAddr;
  readonly callId: string;
  readonly cseq: number;
  /** RFC 3261 §8.1.1.6: 70 unless told otherwise. */
  readonly maxForwards?: number;
  readonly contact?: string;
  /** RFC 6665 §8.2.1 / RFC 3903 §4.1: the event package, e.g. `presence`. */
  readonly event?: string;
  readonly expires?: number;
  /** RFC 3903 §11.3.2: the entity tag a refresh, modify or remove names. */
  readonly sipIfMatch?: string;
  readonly contentType?: string;
  readonly body?: string;
  /** RFC 3261 §22.2 / §22.3: credentials answering a 401 (Authorization) or a 407 (Proxy-Authorization). */
  readonly authorization?: readonly AuthorizationHeader[];
  readonly userAgent?: string;
}

export interface AuthorizationHeader {
  readonly header: 'Authorization' | 'Proxy-Authorization';
  readonly value: string;
}

export interface ViaSpec {
  /** RFC 3261 §20.42 / §18.1.1: the transport the request is sent over (TLS for sips:). */
  readonly transport: 'UDP' | 'TCP' | 'TLS';
  readonly host: string;
  readonly port: number;
  readonly branch: string;
  /** RFC 3581: ask the server to answer to the packet's source port (UDP). */
  readonly rport: boolean;
}

function checkValue(name: string, value: string): string {
  // Header injection guard: no CR, LF or NUL inside one field.
  if (/[\r\n\0]/.test(value)) throw new SipBuildError(`${name} contains a line break or NUL`);
  return value;
}

function nameAddr(field: string, value: NameAddr): string {
  checkValue(field, value.uri);
  if (/[<>\s]/.test(value.uri)) throw new SipBuildError(`${field} URI contains '<', '>' or whitespace`);
  const tag = value.tag === undefined ? '' : `;tag=${checkValue(`${field} tag`, value.tag)}`;
  return `<${value.uri}>${tag}`;
}

function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Serializes a request (RFC 3261 §7.1, §8.1.1) with the given topmost Via. */
export function buildRequest(spec: SipRequestSpec, via: ViaSpec): Buffer {
  if (!TOKEN.test(spec.method)) throw new SipBuildError(`invalid method ${JSON.stringify(spec.method)}`);
  if (/[\s<>]/.test(spec.requestUri) || !spec.requestUri) throw new SipBuildError('invalid Request-URI');
  if (!via.branch.startsWith(BRANCH_MAGIC_COOKIE)) throw new SipBuildError(`branch must start with ${BRANCH_MAGIC_COOKIE} (RFC 3261 §8.1.1.7)`);
  if (!Number.isInteger(spec.cseq) || spec.cseq < 0 || spec.cseq >= 2 ** 31) throw new SipBuildError('CSeq out of range (RFC 3261 §8.1.1.5)');
  const body = spec.body === undefined ? Buffer.alloc(0) : Buffer.from(spec.body, 'utf8');
  const lines = [
    `${spec.method} ${spec.requestUri} SIP/2.0`,
    `Via: SIP/2.0/${via.transport} ${hostPort(via.host, via.port)};branch=${checkValue('branch', via.branch)}${via.rport ? ';rport' : ''}`,
    `Max-Forwards: ${spec.maxForwards ?? 70}`,
    `From: ${nameAddr('From', spec.from)}`,
    `To: ${nameAddr('To', spec.to)}`,
    `Call-ID: ${checkValue('Call-ID', spec.callId)}`,
    `CSeq: ${spec.cseq} ${spec.method}`,
  ];
  if (spec.contact !== undefined) lines.push(`Contact: <${checkValue('Contact', spec.contact)}>`);
  if (spec.event !== undefined) lines.push(`Event: ${checkValue('Event', spec.event)}`);
  if (spec.expires !== undefined) {
    if (!Number.isInteger(spec.expires) || spec.expires < 0) throw new SipBuildError('Expires must be a non-negative integer');
    lines.push(`Expires: ${spec.expires}`);
  }
  if (spec.sipIfMatch !== undefined) lines.push(`SIP-If-Match: ${checkValue('SIP-If-Match', spec.sipIfMatch)}`);
  for (const auth of spec.authorization ?? []) lines.push(`${auth.header}: ${checkValue(auth.header, auth.value)}`);
  if (spec.userAgent !== undefined) lines.push(`User-Agent: ${checkValue('User-Agent', spec.userAgent)}`);
  if (body.length > 0) {
    if (spec.contentType === undefined) throw new SipBuildError('a body needs a Content-Type (RFC 3261 §20.15)');
    lines.push(`Content-Type: ${checkValue('Content-Type', spec.contentType)}`);
  }
  lines.push(`Content-Length: ${body.length}`);
  const head = Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
  const message = Buffer.concat([head, body]);
  if (message.length > MAX_MESSAGE_BYTES) throw new SipBuildError(`request of ${message.length} bytes exceeds ${MAX_MESSAGE_BYTES}`);
  return message;
}

function randomToken(bytes: number): string {
  return randomBytes(bytes).toString('base64url');
}

/** A fresh branch: magic cookie + 128 random bits (RFC 3261 §8.1.1.7: unique across space and time). */
export function newBranch(): string {
  return `${BRANCH_MAGIC_COOKIE}${randomBytes(16).toString('hex')}`;
}

/** A From tag (RFC 3261 §19.3: at least 32 bits of randomness). */
export function newTag(): string {
  return randomBytes(8).toString('hex');
}

/** A Call-ID (RFC 3261 §8.1.1.4: globally unique). */
export function newCallId(): string {
  return randomToken(18);
}
