import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Server } from 'node:net';
import type { Duplex } from 'node:stream';
import { createWebSocketStream, WebSocketServer } from 'ws';
import { httpErrors, type HttpErrorCode } from '../core/errors.js';
import type { Log } from '../core/log.js';

/**
 * MQTT over WebSockets (MQTT 3.1.1 §6) for browsers and for networks that
 * let only HTTPS out: served on the API's listener (so over TLS whenever
 * the API is), at one path. Each WebSocket becomes a byte stream handed to
 * the embedded broker, which applies the same packet-size guard, connection
 * limit and device authentication as on its own port. Upgrades on any other
 * path are refused. The Origin header is not checked: a browser page on
 * another site gains nothing, since MQTT authenticates with the device
 * token in CONNECT, never with cookies.
 */
export interface MqttWebSocketOptions {
  /** The API's HTTP or HTTPS server. */
  readonly server: Server;
  readonly path: string;
  /** Largest WebSocket message accepted: ws buffers a whole message before the frame guard sees it. */
  readonly maxMessageBytes: number;
  readonly atCapacity: () => boolean;
  readonly onRefusedAtCapacity: () => void;
  /** The broker's per-address connection rate (EmbeddedBroker.admit): 0, or the ms until the address may connect again. */
  readonly admit: (address: string | undefined) => number;
  readonly accept: (stream: Duplex) => void;
  readonly log: Log;
}

export interface MqttWebSockets {
  /** Closes every MQTT-over-WebSocket connection (before the HTTP server closes: upgraded sockets would hold it open). */
  close(): void;
}

/** MQTT 3.1.1 §6: "mqtt"; MQTT 3.1 clients offer "mqttv3.1". */
const SUBPROTOCOLS = ['mqtt', 'mqttv3.1'];

export function serveMqttOverWebSockets(options: MqttWebSocketOptions): MqttWebSockets {
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: options.maxMessageBytes,
    // The handshake is refused below unless the client offers one of these.
    handleProtocols: (offered) => SUBPROTOCOLS.find((p) => offered.has(p)) ?? false,
    // MQTT packets are small and mostly unique: compression would cost memory per connection for little.
    perMessageDeflate: false,
  });
  const onUpgrade = (request: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on('error', () => undefined); // a client that vanishes mid-handshake
    const path = (request.url ?? '').split('?')[0];
    if (path !== options.path) return refuse(socket, 'not_found', `Only MQTT is served over WebSockets, at ${options.path}.`);
    const offered = (request.headers['sec-websocket-protocol'] ?? '').split(',').map((p) => p.trim());
    if (!offered.some((p) => SUBPROTOCOLS.includes(p))) return refuse(socket, 'invalid_request', 'Offer the WebSocket subprotocol "mqtt" (MQTT 3.1.1 §6).');
    if (options.atCapacity()) {
      options.onRefusedAtCapacity();
      return refuse(socket, 'unavailable', 'Too many MQTT connections.');
    }
    // Before the WebSocket handshake and the token check, as on the broker's own port.
    const wait = options.admit(request.socket.remoteAddress);
    if (wait > 0) return refuse(socket, 'too_many_requests', 'Too many MQTT connections from this address; retry later.', { 'retry-after': String(Math.ceil(wait / 1000)) });
    wss.handleUpgrade(request, socket, head, (ws) => {
      const stream = createWebSocketStream(ws);
      stream.on('error', (error: NodeJS.ErrnoException) => options.log.debug({ code: error.code ?? 'ws_error' }, 'mqtt websocket error'));
      options.accept(stream);
    });
  };
  options.server.on('upgrade', onUpgrade);
  return {
    close: () => {
      options.server.off('upgrade', onUpgrade);
      for (const client of wss.clients) client.terminate();
      wss.close();
    },
  };
}

/** Answers an upgrade request in the catalog's shape (the socket is still plain HTTP here) and closes it. */
function refuse(socket: Duplex, code: HttpErrorCode, message: string, headers: Record<string, string> = {}): void {
  const { status } = httpErrors[code];
  const body = JSON.stringify({ code, message });
  const extra = Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('');
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${extra}connection: close\r\n\r\n${body}`,
  );
}
