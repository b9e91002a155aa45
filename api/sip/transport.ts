import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { connect, isIP, isIPv6, type Socket as TcpSocket } from 'node:net';
import { connect as connectTls, type ConnectionOptions } from 'node:tls';
import { tlsErrorText, tlsFailureHint } from '../../core/tls/errors.js';
import type { TlsMaterial } from '../../core/tls/pem.js';
import { StreamFramer } from './framing.js';
import { BRANCH_MAGIC_COOKIE, buildRequest, newBranch, parseCSeq, parseMessage, sentByOf, topViaBranch, topViaSentBy, type ParseResult, type SipMessage, type SipParseError, type SipRequestSpec, type SipResponse } from './message.js';
import { checkSipServerIdentity } from './tls-identity.js';

/**
 * Client transports for non-INVITE transactions (RFC 3261 §17.1.2, §18.1):
 * `send(request)` resolves with the final response of that transaction.
 *
 * - UDP: one socket; responses are matched to transactions by the topmost
 *   Via branch and the CSeq method (§17.1.3); the request is retransmitted
 *   on Timer E (T1, doubling up to T2; T2 once a provisional response came)
 *   until Timer F (64*T1) ends the transaction (§17.1.2.2).
 * - TCP: one persistent connection, opened on first use and re-opened on the
 *   next request after it closes; framing by Content-Length (§18.3); no
 *   retransmission (§17.1.2.2: Timer E is for unreliable transports only),
 *   Timer F still bounds the wait. Closing the connection fails the
 *   transactions on it (§17.1.4 transport error).
 * - TLS (RFC 3261 §26.2, §18): the TCP transport over a TLS connection,
 *   Via transport TLS (§18.1.1, §20.42). The server's certificate must
 *   chain to the configured CA (or a public root) and name the host of
 *   the server URI (RFC 5922 §7); a failed handshake fails the
 *   transactions waiting for it with the code `tls`.
 *
 * Both bound the transactions in flight and the requests waiting for a slot.
 */

export type SipTransportErrorCode = 'timeout' | 'network' | 'tls' | 'closed' | 'overloaded' | 'invalid-request';

export class SipTransportError extends Error {
  override readonly name = 'SipTransportError';
  constructor(
    readonly code: SipTransportErrorCode,
    message: string,
    /** The connection could not be set up (refused, reset, unreachable): the request never left. */
    readonly connectFailed = false,
  ) {
    super(message);
  }
}

export type SipTransportProtocol = 'udp' | 'tcp' | 'tls';

export interface SipTransport {
  readonly protocol: SipTransportProtocol;
  /** Runs one non-INVITE client transaction; rejects with a {@link SipTransportError}. */
  send(request: SipRequestSpec): Promise<SipResponse>;
  /** Fails what is pending with `closed`, stops every timer, releases the socket. */
  close(): Promise<void>;
}

export interface TransactionTimers {
  /** RFC 3261 §17.1.1.1 T1, RTT estimate: 500 ms. */
  readonly t1Ms: number;
  /** RFC 3261 §17.1.2.2 T2, retransmit cap: 4 s. */
  readonly t2Ms: number;
  /** RFC 3261 §17.1.2.2 Timer F: 64*T1 by default. */
  readonly timerFMs: number;
}

export interface TransportOptions {
  readonly remoteHost: string;
  readonly remotePort: number;
  /** Local address to bind (UDP) or to connect from (TCP); also the Via sent-by. Default 127.0.0.1. */
  readonly localHost?: string;
  /** Local UDP port (0 = ephemeral). TCP always uses an ephemeral source port. */
  readonly localPort?: number;
  readonly timers?: Partial<TransactionTimers>;
  /** Transactions in flight at once (default 64); more wait in a queue. */
  readonly maxConcurrent?: number;
  /** Requests allowed to wait for a slot (default 10,000); beyond that `overloaded`. */
  readonly maxQueued?: number;
  /** Called for each 1xx (RFC 3261 §17.1.2.2: passed to the TU). */
  readonly onProvisional?: (response: SipResponse) => void;
  /** Called for input that is not a well-formed SIP message (it is dropped). */
  readonly onMalformed?: (error: SipParseError) => void;
  /** TLS: CA and client certificate (SIP_CA_FILE, SIP_CERT_FILE, SIP_KEY_FILE). */
  readonly tls?: TlsMaterial;
}

export function resolveTimers(timers: Partial<TransactionTimers> = {}): TransactionTimers {
  const t1Ms = timers.t1Ms ?? 500;
  return { t1Ms, t2Ms: timers.t2Ms ?? 4000, timerFMs: timers.timerFMs ?? 64 * t1Ms };
}

interface Transaction {
  readonly key: string;
  readonly bytes: Buffer;
  /** The Via sent-by the request went out with (sentByOf), once built. */
  sentBy?: string;
  readonly resolve: (response: SipResponse) => void;
  readonly reject: (error: SipTransportError) => void;
  timerE?: NodeJS.Timeout;
  timerF?: NodeJS.Timeout;
  interval: number;
  proceeding: boolean;
  /** TCP: the connection the request went out on. */
  connection?: TcpSocket;
  /** TCP: when it went out (performance.now()). */
  sentAt?: number;
}

const transactionKey = (branch: string, method: string): string => `${branch}\u0000${method.toUpperCase()}`;

abstract class ClientTransport implements SipTransport {
  abstract readonly protocol: SipTransportProtocol;
  protected readonly timers: TransactionTimers;
  protected readonly pending = new Map<string, Transaction>();
  protected closed = false;
  private active = 0;
  private readonly waiting: { grant: () => void; deny: (e: SipTransportError) => void }[] = [];
  private readonly maxConcurrent: number;
  private readonly maxQueued: number;

  constructor(protected readonly options: TransportOptions) {
    this.timers = resolveTimers(options.timers);
    this.maxConcurrent = Math.max(1, options.maxConcurrent ?? 64);
    this.maxQueued = Math.max(0, options.maxQueued ?? 10_000);
  }

  /** Via sent-by of this transport, and whether to add rport (RFC 3581). */
  protected abstract via(): { host: string; port: number; transport: 'UDP' | 'TCP' | 'TLS'; rport: boolean };
  /** Makes sure the transport can send (TCP connects); rejects with a transport error. */
  protected abstract ready(): Promise<void>;
  /** Puts the bytes on the wire for a transaction. */
  protected abstract transmit(tx: Transaction): void;
  protected abstract release(): Promise<void>;

  async send(request: SipRequestSpec): Promise<SipResponse> {
    if (this.closed) throw new SipTransportError('closed', 'transport is closed');
    await this.acquire();
    try {
      return await this.run(request);
    } finally {
      this.active--;
      this.waiting.shift()?.grant();
    }
  }

  private acquire(): Promise<void> {
    if (this.active < this.maxConcurrent) {
      this.active++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueued) return Promise.reject(new SipTransportError('overloaded', `${this.active} transactions in flight and ${this.waiting.length} waiting`));
    return new Promise((resolve, reject) => {
      this.waiting.push({
        grant: () => {
          this.active++;
          resolve();
        },
        deny: reject,
      });
    });
  }

  private run(request: SipRequestSpec): Promise<SipResponse> {
    return new Promise<SipResponse>((resolve, reject) => {
      const branch = newBranch();
      const key = transactionKey(branch, request.method);
      const tx: Transaction = {
        key,
        bytes: Buffer.alloc(0),
        resolve,
        reject,
        interval: this.timers.t1Ms,
        proceeding: false,
      };
      // Timer F runs from the start, connection set-up included.
      tx.timerF = setTimeout(() => this.finish(tx, new SipTransportError('timeout', `no final response within ${this.timers.timerFMs} ms (Timer F)`)), this.timers.timerFMs);
      this.pending.set(key, tx);
      this.ready().then(
        () => {
          if (!this.pending.has(key)) return;
          let bytes: Buffer;
          const via = this.via();
          try {
            bytes = buildRequest(request, { ...via, branch });
          } catch (error) {
            this.finish(tx, new SipTransportError('invalid-request', error instanceof Error ? error.message : String(error)));
            return;
          }
          (tx as { bytes: Buffer }).bytes = bytes;
          tx.sentBy = sentByOf(via.host, via.port);
          this.transmit(tx);
        },
        (error: unknown) => this.finish(tx, error instanceof SipTransportError ? error : new SipTransportError('network', String(error))),
      );
    });
  }

  /** Ends a transaction with a final response or an error; idempotent. */
  protected finish(tx: Transaction, outcome: SipResponse | SipTransportError): void {
    if (this.pending.get(tx.key) !== tx) return;
    this.pending.delete(tx.key);
    clearTimeout(tx.timerE);
    clearTimeout(tx.timerF);
    if (outcome instanceof SipTransportError) tx.reject(outcome);
    else tx.resolve(outcome);
  }

  /** Hands a received message to its transaction (RFC 3261 §17.1.3 matching). */
  protected receive(result: ParseResult<SipMessage>): void {
    if (!result.ok) {
      this.options.onMalformed?.(result.error);
      return;
    }
    const message = result.value;
    // A client-only user agent: requests from the server (keep-alive OPTIONS and the like) are not for us.
    if (message.kind !== 'response') return;
    const branch = topViaBranch(message.headers);
    const cseq = parseCSeq(message.headers.get('cseq'));
    if (branch === undefined || !cseq) return;
    const tx = this.pending.get(transactionKey(branch, cseq.method));
    if (!tx) return; // a retransmitted final response, or a stray: absorbed (§17.1.2.2 Completed state)
    // RFC 3261 §18.1.2: a response whose top Via sent-by is not what this
    // client put there is silently discarded (a branch alone is not enough:
    // a response for someone else's request that reuses it is not ours).
    if (topViaSentBy(message.headers) !== tx.sentBy) return;
    if (message.status < 200) {
      if (!tx.proceeding) {
        tx.proceeding = true;
        this.onProceeding(tx);
      }
      this.options.onProvisional?.(message);
      return;
    }
    this.finish(tx, message);
  }

  protected onProceeding(_tx: Transaction): void {}

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const closedError = (): SipTransportError => new SipTransportError('closed', 'transport closed');
    for (const waiter of this.waiting.splice(0)) waiter.deny(closedError());
    for (const tx of [...this.pending.values()]) this.finish(tx, closedError());
    await this.release();
  }
}

class UdpTransport extends ClientTransport {
  readonly protocol = 'udp' as const;
  private readonly socket: UdpSocket;
  private port = 0;
  private readonly host: string;

  constructor(options: TransportOptions) {
    super(options);
    this.host = options.localHost ?? '127.0.0.1';
    this.socket = createSocket(isIPv6(this.host) ? 'udp6' : 'udp4');
    this.socket.on('message', (data) => this.receive(parseMessage(data)));
    // Socket errors after bind (ICMP unreachable on some systems) must not crash the process; pending transactions time out.
    this.socket.on('error', () => {});
  }

  async bind(): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(new SipTransportError('network', `cannot bind UDP ${this.host}:${this.options.localPort ?? 0}: ${error.message}`));
      this.socket.once('error', onError);
      this.socket.bind(this.options.localPort ?? 0, this.host, () => {
        this.socket.off('error', onError);
        this.port = this.socket.address().port;
        resolve();
      });
    });
  }

  get localPort(): number {
    return this.port;
  }

  protected via() {
    return { host: this.host, port: this.port, transport: 'UDP' as const, rport: true };
  }

  protected ready(): Promise<void> {
    return this.closed ? Promise.reject(new SipTransportError('closed', 'transport closed')) : Promise.resolve();
  }

  protected transmit(tx: Transaction): void {
    this.write(tx);
    this.armTimerE(tx);
  }

  private write(tx: Transaction): void {
    this.socket.send(tx.bytes, this.options.remotePort, this.options.remoteHost, (error) => {
      // §17.1.4: a transport error ends the transaction.
      if (error) this.finish(tx, new SipTransportError('network', `UDP send failed: ${error.message}`));
    });
  }

  /** RFC 3261 §17.1.2.2: Timer E fires at T1, 2*T1, ... capped at T2; in Proceeding always T2. */
  private armTimerE(tx: Transaction): void {
    tx.timerE = setTimeout(() => {
      if (this.pending.get(tx.key) !== tx) return;
      this.write(tx);
      tx.interval = tx.proceeding ? this.timers.t2Ms : Math.min(2 * tx.interval, this.timers.t2Ms);
      this.armTimerE(tx);
    }, tx.interval);
  }

  protected override onProceeding(tx: Transaction): void {
    // Switch to T2 now rather than after the current (possibly shorter) interval.
    tx.interval = this.timers.t2Ms;
    clearTimeout(tx.timerE);
    this.armTimerE(tx);
  }

  protected release(): Promise<void> {
    return new Promise((resolve) => {
      try {
        this.socket.close(() => resolve());
      } catch {
        resolve();
      }
    });
  }
}

/** How long a SIP connection may be idle before TCP keep-alive probes start (the kernel's default is two hours). */
const KEEPALIVE_IDLE_MS = 60_000;

class TcpTransport extends ClientTransport {
  readonly protocol: 'tcp' | 'tls' = 'tcp';
  private socket: TcpSocket | undefined;
  private connecting: Promise<TcpSocket> | undefined;
  /** The socket of a connection attempt in progress. */
  private opening: TcpSocket | undefined;

  /**
   * Over a stream nothing is retransmitted: a request that got no final
   * response within Timer F was lost with a connection that is dead without
   * having closed (a NAT or firewall forgot it). Every later request would
   * be written into it and time out too, for as long as the kernel takes to
   * give up (about 15 minutes): the connection is dropped instead, and the
   * next request opens a new one (RFC 3261 §18.1.1: a failed transaction
   * over a connection-oriented transport is a transport error).
   */
  protected override finish(tx: Transaction, outcome: SipResponse | SipTransportError): void {
    const finishing = this.pending.get(tx.key) === tx;
    super.finish(tx, outcome);
    const connection = tx.connection;
    if (!finishing || !(outcome instanceof SipTransportError) || outcome.code !== 'timeout' || !connection || connection !== this.socket || connection.destroyed) return;
    // Only a connection that has said nothing since: one that answers other
    // requests is alive, and a server slow on this one is no reason to fail
    // the others in flight on it.
    if (this.lastDataAt >= (tx.sentAt ?? 0)) return;
    connection.destroy();
  }

  /** When the current connection last brought bytes (performance.now()). */
  private lastDataAt = Number.NEGATIVE_INFINITY;

  protected via() {
    const s = this.socket;
    return { host: s?.localAddress ?? this.options.localHost ?? '127.0.0.1', port: s?.localPort ?? 0, transport: this.protocol === 'tls' ? ('TLS' as const) : ('TCP' as const), rport: false };
  }

  /** Opens the connection; `ready` is the event after which SIP may flow. */
  protected dial(): { socket: TcpSocket; ready: 'connect' | 'secureConnect' } {
    return { socket: connect({ host: this.options.remoteHost, port: this.options.remotePort, localAddress: this.options.localHost ?? '127.0.0.1' }), ready: 'connect' };
  }

  /** Why an established connection ended, for the transactions on it. */
  protected lost(error: Error | undefined): SipTransportError {
    return new SipTransportError('network', `TCP connection closed before the final response${error ? ` (${error.message})` : ''}`);
  }

  /** Why a connection attempt failed, for the transactions waiting on it. */
  protected failure(why: string, _error: Error | undefined, _tcpConnected: boolean): SipTransportError {
    // Refused, reset or unreachable: connectFailed (RFC 3261 §18.1.1 names a
    // reset or an ICMP error). Not a timeout, which the requests' own Timer F
    // reaches first anyway: every request fails the same way.
    return new SipTransportError('network', `TCP connect to ${this.options.remoteHost}:${this.options.remotePort} failed: ${why}`, why !== 'timed out');
  }

  protected async ready(): Promise<void> {
    if (this.closed) throw new SipTransportError('closed', 'transport closed');
    if (this.socket && !this.socket.destroyed) return;
    this.connecting ??= this.open().finally(() => {
      this.connecting = undefined;
    });
    await this.connecting;
  }

  private open(): Promise<TcpSocket> {
    return new Promise((resolve, reject) => {
      const { socket, ready } = this.dial();
      this.opening = socket;
      const framer = new StreamFramer();
      let tcpConnected = false;
      socket.once('connect', () => {
        tcpConnected = true;
      });
      const failed = (why: string, error?: Error): void => {
        clearTimeout(timer);
        if (this.opening === socket) this.opening = undefined;
        socket.destroy();
        reject(this.closed ? new SipTransportError('closed', `${this.protocol.toUpperCase()} connect to ${this.options.remoteHost}:${this.options.remotePort} failed: ${why}`) : this.failure(why, error, tcpConnected));
      };
      // A connection that does not come up within Timer F is given up.
      // (failed() runs from events and this timer only, so after `timer` exists.)
      const timer = setTimeout(() => failed('timed out'), this.timers.timerFMs);
      const onError = (error: Error): void => failed(tlsErrorText(error), error);
      const onClose = (): void => failed('closed');
      socket.once('error', onError);
      socket.once('close', onClose);
      socket.once(ready, () => {
        clearTimeout(timer);
        socket.off('error', onError);
        socket.off('close', onClose);
        if (this.opening === socket) this.opening = undefined;
        if (this.closed) {
          socket.destroy();
          reject(new SipTransportError('closed', 'transport closed'));
          return;
        }
        socket.setNoDelay(true);
        // An idle connection that died silently is found by the kernel's keep-alive probes, not only by the next request's Timer F.
        socket.setKeepAlive(true, KEEPALIVE_IDLE_MS);
        // 'close' follows and does the clean-up; the error says why.
        let lastError: Error | undefined;
        socket.on('error', (error) => {
          lastError = error;
        });
        this.lastDataAt = Number.NEGATIVE_INFINITY;
        socket.on('data', (chunk: Buffer) => {
          this.lastDataAt = performance.now();
          for (const result of framer.push(chunk)) this.receive(result);
          // The stream cannot be re-synchronised after a framing error.
          if (framer.broken) socket.destroy();
        });
        socket.on('close', () => {
          if (this.socket === socket) this.socket = undefined;
          for (const tx of [...this.pending.values()]) {
            if (tx.connection === socket) this.finish(tx, this.lost(lastError));
          }
        });
        this.socket = socket;
        resolve(socket);
      });
    });
  }

  protected transmit(tx: Transaction): void {
    const socket = this.socket;
    if (!socket || socket.destroyed) {
      this.finish(tx, new SipTransportError('network', 'TCP connection lost'));
      return;
    }
    tx.connection = socket;
    tx.sentAt = performance.now();
    socket.write(tx.bytes);
  }

  protected async release(): Promise<void> {
    const s = this.socket;
    this.socket = undefined;
    // An attempt still connecting is abandoned (its promise rejects on 'close').
    this.opening?.destroy();
    await this.connecting?.catch(() => undefined);
    if (!s || s.destroyed) return;
    await new Promise<void>((resolve) => {
      // Do not wait long for a peer that never closes its side.
      const force = setTimeout(() => s.destroy(), 500);
      s.once('close', () => {
        clearTimeout(force);
        resolve();
      });
      s.end();
    });
  }
}

/**
 * SIP over TLS (RFC 3261 §26.2): the TCP transport's framing and
 * connection handling over tls.connect. The server's certificate is always
 * verified (no setting turns that off): the chain against the CA, the name
 * against the host of the server URI (RFC 5922 §7, checkSipServerIdentity).
 * SNI carries that host when it is a name (RFC 6066 §3: never an address).
 */
class TlsTransport extends TcpTransport {
  override readonly protocol = 'tls' as const;

  protected override dial(): { socket: TcpSocket; ready: 'connect' | 'secureConnect' } {
    const { remoteHost: host, remotePort: port, tls = {} } = this.options;
    // tls.connect passes the net.connect options (localAddress) through; its type does not list them.
    const options: ConnectionOptions & { localAddress: string } = {
      host,
      port,
      localAddress: this.options.localHost ?? '127.0.0.1',
      ...(isIP(host) === 0 ? { servername: host } : {}),
      rejectUnauthorized: true,
      checkServerIdentity: (_name, cert) => checkSipServerIdentity(host, cert),
      ...(tls.ca === undefined ? {} : { ca: tls.ca }),
      ...(tls.cert !== undefined && tls.key !== undefined ? { cert: tls.cert, key: tls.key } : {}),
    };
    return { socket: connectTls(options), ready: 'secureConnect' };
  }

  /**
   * In TLS 1.3 the client's handshake completes before the server has
   * checked the client certificate (RFC 8446 §4.4.2): a server that wants
   * one, or refuses ours, says so with an alert after secureConnect.
   */
  protected override lost(error: Error | undefined): SipTransportError {
    const hint = tlsFailureHint(error, { ca: 'SIP_CA_FILE', cert: 'SIP_CERT_FILE/SIP_KEY_FILE', host: 'SIP_SERVER' });
    if (!hint) return super.lost(error);
    return new SipTransportError('tls', `TLS connection to ${this.options.remoteHost}:${this.options.remotePort} refused by the server: ${tlsErrorText(error)} (${hint})`);
  }

  protected override failure(why: string, error: Error | undefined, tcpConnected: boolean): SipTransportError {
    const where = `${this.options.remoteHost}:${this.options.remotePort}`;
    // Once TCP is up, what fails before secureConnect is the handshake.
    if (!tcpConnected) return new SipTransportError('network', `TCP connect to ${where} failed: ${why}`);
    const hint = tlsFailureHint(error, { ca: 'SIP_CA_FILE', cert: 'SIP_CERT_FILE/SIP_KEY_FILE', host: 'SIP_SERVER' });
    return new SipTransportError('tls', `TLS handshake with ${where} failed: ${why}${hint ? ` (${hint})` : ''}`);
  }
}

/** A UDP transport bound and ready. */
export async function createUdpTransport(options: TransportOptions): Promise<SipTransport & { readonly localPort: number }> {
  const transport = new UdpTransport(options);
  await transport.bind();
  return transport;
}

/** A TCP transport; it connects on the first request. */
export function createTcpTransport(options: TransportOptions): SipTransport {
  return new TcpTransport(options);
}

/** A TLS transport; it connects (and verifies the server) on the first request. */
export function createTlsTransport(options: TransportOptions): SipTransport {
  return new TlsTransport(options);
}

/**
 * RFC 3261 §18.1.1: a request larger than 1300 bytes, when the path MTU is
 * not known, MUST be sent over a congestion-controlled transport such as
 * TCP (a large UDP datagram is fragmented, and fragments are what
 * firewalls and NATs drop). A rich presence document (activities, place,
 * location, devices) is larger than that.
 */
export const UDP_MAX_REQUEST_BYTES = 1300;

/**
 * UDP as configured, and TCP to the same server and port for the requests
 * UDP must not carry (RFC 3261 §18.1.1); the TCP transport writes its own
 * top Via (TCP), as the same section asks. The connection is opened with
 * the first such request.
 */
class UdpWithTcpForLarge implements SipTransport {
  readonly protocol = 'udp' as const;
  private tcp: SipTransport | undefined;
  private closed = false;
  /** Until when large requests go over UDP after all: the server took no TCP connection. */
  private udpOnlyUntil = Number.NEGATIVE_INFINITY;

  constructor(
    private readonly udp: SipTransport,
    private readonly options: TransportOptions,
  ) {}

  async send(request: SipRequestSpec): Promise<SipResponse> {
    // Closed: the UDP transport refuses it as closed.
    if (this.closed || requestBytes(request, this.options) <= UDP_MAX_REQUEST_BYTES || performance.now() < this.udpOnlyUntil) return this.udp.send(request);
    this.tcp ??= createTcpTransport(this.options);
    try {
      return await this.tcp.send(request);
    } catch (error) {
      // RFC 3261 §18.1.1: a request sent over TCP only for its size whose
      // connection is refused or reset SHOULD be retried over UDP. For a
      // while, so that a UDP-only server costs no connection attempt per
      // request.
      if (!(error instanceof SipTransportError) || !error.connectFailed || this.closed) throw error;
      this.udpOnlyUntil = performance.now() + UDP_ONLY_MS;
      return this.udp.send(request);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await Promise.all([this.udp.close(), this.tcp?.close()]);
  }
}

/** After a refused TCP connection, how long large requests go over UDP before TCP is tried again. */
const UDP_ONLY_MS = 300_000;

/** The request's size over UDP, with the longest Via it could carry; 0 if it cannot be built (the UDP transport then reports why). */
function requestBytes(request: SipRequestSpec, options: TransportOptions): number {
  try {
    return buildRequest(request, { transport: 'UDP', host: options.localHost ?? '127.0.0.1', port: 65_535, branch: `${BRANCH_MAGIC_COOKIE}${'0'.repeat(32)}`, rport: true }).length;
  } catch {
    return 0;
  }
}

export async function createTransport(protocol: SipTransportProtocol, options: TransportOptions): Promise<SipTransport> {
  if (protocol === 'udp') return new UdpWithTcpForLarge(await createUdpTransport(options), options);
  return protocol === 'tls' ? createTlsTransport(options) : createTcpTransport(options);
}
