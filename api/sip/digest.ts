import { createHash, randomBytes } from 'node:crypto';

/**
 * HTTP Digest access authentication as SIP uses it: RFC 7616 (MD5, SHA-256
 * and their -sess variants, qop auth / auth-int), which stays compatible with
 * RFC 2617 and with RFC 3261 §22.4 (SIP's profile: no qop means the RFC 2069
 * form, and qop values are sent unquoted).
 */

export type DigestAlgorithm = 'MD5' | 'MD5-sess' | 'SHA-256' | 'SHA-256-sess';
export type DigestQop = 'auth' | 'auth-int';

export interface DigestChallenge {
  readonly realm: string;
  readonly nonce: string;
  readonly opaque?: string;
  /** RFC 7616 §3.3: absent means MD5. */
  readonly algorithm: DigestAlgorithm;
  /** RFC 7616 §3.3: the qop values offered; empty for an RFC 2069 style challenge. */
  readonly qop: readonly DigestQop[];
  /** RFC 7616 §3.3: the nonce was stale, the credentials were fine; retry with the new nonce. */
  readonly stale: boolean;
}

const ALGORITHMS: Readonly<Record<string, DigestAlgorithm>> = {
  md5: 'MD5',
  'md5-sess': 'MD5-sess',
  'sha-256': 'SHA-256',
  'sha-256-sess': 'SHA-256-sess',
};

/** Preference when several challenges are offered (RFC 7616 §3.7: the client uses the strongest it supports). */
const STRENGTH: Readonly<Record<DigestAlgorithm, number>> = { 'SHA-256': 4, 'SHA-256-sess': 3, MD5: 2, 'MD5-sess': 1 };

/**
 * Splits `scheme param=value, param="quoted, value", ...` into auth-params.
 * Returns the list of challenges in a header value (RFC 7235 §4.1 allows
 * several in one field: a token not followed by `=` starts a new one).
 */
export function parseAuthParams(value: string): { scheme: string; params: Map<string, string> }[] {
  const out: { scheme: string; params: Map<string, string> }[] = [];
  let i = 0;
  const n = value.length;
  let current: { scheme: string; params: Map<string, string> } | undefined;
  const skipWs = (): void => {
    while (i < n && (value[i] === ' ' || value[i] === '\t' || value[i] === ',')) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && /[A-Za-z0-9\-.!#$%&'*+^_`|~]/.test(value[i] ?? '')) i++;
    return value.slice(start, i);
  };
  while (i < n) {
    skipWs();
    if (i >= n) break;
    const token = readToken();
    if (!token) return out; // garbage: stop, keep what was understood
    let j = i;
    while (j < n && (value[j] === ' ' || value[j] === '\t')) j++;
    if (value[j] !== '=') {
      current = { scheme: token, params: new Map() };
      out.push(current);
      continue;
    }
    i = j + 1;
    while (i < n && (value[i] === ' ' || value[i] === '\t')) i++;
    let v = '';
    if (value[i] === '"') {
      i++;
      let closed = false;
      while (i < n) {
        const ch = value[i++];
        if (ch === '\\' && i < n) v += value[i++];
        else if (ch === '"') {
          closed = true;
          break;
        } else v += ch;
      }
      if (!closed) return out;
    } else {
      const start = i;
      while (i < n && value[i] !== ',' && value[i] !== ' ' && value[i] !== '\t') i++;
      v = value.slice(start, i);
    }
    if (!current) return out;
    const name = token.toLowerCase();
    if (!current.params.has(name)) current.params.set(name, v);
  }
  return out;
}

/** Parses the Digest challenges of WWW-Authenticate / Proxy-Authenticate values; unusable ones (other schemes, unknown algorithms, no realm or nonce) are dropped. */
export function parseChallenges(values: readonly string[]): DigestChallenge[] {
  const out: DigestChallenge[] = [];
  for (const value of values) {
    for (const { scheme, params } of parseAuthParams(value)) {
      if (scheme.toLowerCase() !== 'digest') continue;
      const realm = params.get('realm');
      const nonce = params.get('nonce');
      if (realm === undefined || nonce === undefined || nonce === '') continue;
      const algorithmName = params.get('algorithm');
      const algorithm = algorithmName === undefined ? 'MD5' : ALGORITHMS[algorithmName.toLowerCase()];
      if (!algorithm) continue;
      const qop = (params.get('qop') ?? '')
        .split(',')
        .map((q) => q.trim().toLowerCase())
        .filter((q): q is DigestQop => q === 'auth' || q === 'auth-int');
      // A qop list with only unknown values cannot be answered.
      if (params.has('qop') && qop.length === 0) continue;
      const opaque = params.get('opaque');
      out.push({ realm, nonce, algorithm, qop, stale: (params.get('stale') ?? '').toLowerCase() === 'true', ...(opaque === undefined ? {} : { opaque }) });
    }
  }
  return out;
}

/** The challenge to answer: the strongest algorithm (SHA-256 over MD5), first offered on a tie. */
export function chooseChallenge(challenges: readonly DigestChallenge[]): DigestChallenge | undefined {
  let best: DigestChallenge | undefined;
  for (const c of challenges) if (!best || STRENGTH[c.algorithm] > STRENGTH[best.algorithm]) best = c;
  return best;
}

function hash(algorithm: DigestAlgorithm, data: string | Buffer): string {
  return createHash(algorithm.startsWith('SHA-256') ? 'sha256' : 'md5')
    .update(data)
    .digest('hex');
}

export interface DigestInput {
  readonly challenge: DigestChallenge;
  readonly username: string;
  readonly password: string;
  readonly method: string;
  /** The digest-uri: in SIP the Request-URI (RFC 3261 §22.4). */
  readonly uri: string;
  /** Request body, for qop=auth-int (RFC 7616 §3.4.3). */
  readonly body?: string | Buffer;
  /** Client nonce; random when absent. */
  readonly cnonce?: string;
  /** Nonce count, 1 for the first use of a nonce. */
  readonly nc?: number;
  /** The qop to use; by default `auth` when offered, else `auth-int`, else none. */
  readonly qop?: DigestQop;
}

export interface DigestAnswer {
  readonly response: string;
  readonly qop?: DigestQop;
  readonly cnonce?: string;
  /** Eight hex digits (RFC 7616 §3.4). */
  readonly nc?: string;
}

/** RFC 7616 §3.4.1-§3.4.3 (RFC 2617 §3.2.2, RFC 2069 when no qop): the response value. */
export function computeDigest(input: DigestInput): DigestAnswer {
  const { challenge, username, password, method, uri } = input;
  const alg = challenge.algorithm;
  const qop = input.qop ?? (challenge.qop.includes('auth') ? 'auth' : challenge.qop.includes('auth-int') ? 'auth-int' : undefined);
  const needsCnonce = qop !== undefined || alg.endsWith('-sess');
  const cnonce = needsCnonce ? (input.cnonce ?? randomBytes(12).toString('hex')) : undefined;
  // RFC 7616 §3.4.2: A1 = user:realm:pass; -sess: H(user:realm:pass):nonce:cnonce.
  let ha1 = hash(alg, `${username}:${challenge.realm}:${password}`);
  if (alg.endsWith('-sess')) ha1 = hash(alg, `${ha1}:${challenge.nonce}:${cnonce ?? ''}`);
  // RFC 7616 §3.4.3: A2 = method:uri; auth-int: method:uri:H(entity-body).
  const a2 = qop === 'auth-int' ? `${method}:${uri}:${hash(alg, input.body ?? '')}` : `${method}:${uri}`;
  const ha2 = hash(alg, a2);
  if (qop === undefined) return { response: hash(alg, `${ha1}:${challenge.nonce}:${ha2}`), ...(cnonce === undefined ? {} : { cnonce }) };
  const nc = (input.nc ?? 1).toString(16).padStart(8, '0');
  return { response: hash(alg, `${ha1}:${challenge.nonce}:${nc}:${cnonce ?? ''}:${qop}:${ha2}`), qop, cnonce, nc };
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, (c) => `\\${c}`)}"`;
}

/**
 * The Authorization / Proxy-Authorization value (RFC 7616 §3.4, RFC 3261
 * §22.4 and §25.1: username, realm, nonce, uri, response, cnonce, opaque
 * quoted; algorithm, qop, nc as tokens).
 */
export function buildAuthorization(input: DigestInput): string {
  const answer = computeDigest(input);
  const c = input.challenge;
  const parts = [
    `Digest username=${quote(input.username)}`,
    `realm=${quote(c.realm)}`,
    `nonce=${quote(c.nonce)}`,
    `uri=${quote(input.uri)}`,
    `response=${quote(answer.response)}`,
    `algorithm=${c.algorithm}`,
  ];
  if (answer.cnonce !== undefined) parts.push(`cnonce=${quote(answer.cnonce)}`);
  if (c.opaque !== undefined) parts.push(`opaque=${quote(c.opaque)}`);
  if (answer.qop !== undefined) parts.push(`qop=${answer.qop}`, `nc=${answer.nc ?? '00000001'}`);
  return parts.join(', ');
}

export interface ParsedCredentials {
  readonly username: string;
  readonly realm: string;
  readonly nonce: string;
  readonly uri: string;
  readonly response: string;
  readonly algorithm: DigestAlgorithm;
  readonly cnonce?: string;
  readonly opaque?: string;
  readonly qop?: DigestQop;
  readonly nc?: number;
}

/** Parses Digest credentials (the server side; for checking what a client sent). */
export function parseCredentials(value: string): ParsedCredentials | undefined {
  const first = parseAuthParams(value)[0];
  if (!first || first.scheme.toLowerCase() !== 'digest') return undefined;
  const p = first.params;
  const username = p.get('username');
  const realm = p.get('realm');
  const nonce = p.get('nonce');
  const uri = p.get('uri');
  const response = p.get('response');
  if (username === undefined || realm === undefined || nonce === undefined || uri === undefined || response === undefined) return undefined;
  const algorithm = ALGORITHMS[(p.get('algorithm') ?? 'MD5').toLowerCase()];
  if (!algorithm) return undefined;
  const qop = p.get('qop');
  if (qop !== undefined && qop !== 'auth' && qop !== 'auth-int') return undefined;
  const ncText = p.get('nc');
  if (ncText !== undefined && !/^[0-9a-fA-F]{8}$/.test(ncText)) return undefined;
  const cnonce = p.get('cnonce');
  const opaque = p.get('opaque');
  return {
    username,
    realm,
    nonce,
    uri,
    response,
    algorithm,
    ...(cnonce === undefined ? {} : { cnonce }),
    ...(opaque === undefined ? {} : { opaque }),
    ...(qop === undefined ? {} : { qop }),
    ...(ncText === undefined ? {} : { nc: parseInt(ncText, 16) }),
  };
}

/** Checks credentials against the password by recomputing the response (server side; tests and fakes). */
export function verifyCredentials(credentials: ParsedCredentials, password: string, method: string, body?: string | Buffer): boolean {
  const challenge: DigestChallenge = { realm: credentials.realm, nonce: credentials.nonce, algorithm: credentials.algorithm, qop: credentials.qop ? [credentials.qop] : [], stale: false };
  const expected = computeDigest({
    challenge,
    username: credentials.username,
    password,
    method,
    uri: credentials.uri,
    ...(body === undefined ? {} : { body }),
    ...(credentials.cnonce === undefined ? {} : { cnonce: credentials.cnonce }),
    ...(credentials.nc === undefined ? {} : { nc: credentials.nc }),
    ...(credentials.qop === undefined ? {} : { qop: credentials.qop }),
  });
  return expected.response === credentials.response.toLowerCase();
}
