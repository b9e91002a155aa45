import { createServer, type TLSSocket } from 'node:tls';
import { StreamFramer } from '../../api/sip/framing.js';
import type { SipRequest } from '../../api/sip/message.js';

/**
 * A minimal SIP presence server over TLS for tests (RFC 3261 §26.2): it
 * completes real handshakes with the certificate it is given (asking for a
 * client certificate when `clientCa` is set) and answers every PUBLISH 200
 * OK with a fresh SIP-ETag and the requested Expires (RFC 3903 §11.3.1),
 * anything else 405. What it received is kept for assertions.
 */
export interface SipTlsServer {
  readonly port: number;
  readonly requests: SipRequest[];
  /** The client certificates' subjects, one per connection that sent one. */
  readonly clientSubjects: string[];
  /** Handshakes that failed on the server side (their error codes). */
  readonly handshakeErrors: string[];
  close(): Promise<void>;
}

export async function startSipTlsServer(options: { cert: string; key: string; clientCa?: string }): Promise<SipTlsServer> {
  const requests: SipRequest[] = [];
  const clientSubjects: string[] = [];
  const handshakeErrors: string[] = [];
  const sockets = new Set<TLSSocket>();
  let etags = 0;
  const server = createServer(
    {
      cert: options.cert,
      key: options.key,
      ...(options.clientCa ? { ca: options.clientCa, requestCert: true, rejectUnauthorized: true } : {}),
    },
    (socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.on('error', () => {});
      const peer = socket.getPeerCertificate();
      if (peer && peer.subject) clientSubjects.push(String(peer.subject.CN));
      const framer = new StreamFramer();
      socket.on('data', (chunk: Buffer) => {
        for (const result of framer.push(chunk)) {
          if (!result.ok || result.value.kind !== 'request') continue;
          const request = result.value;
          requests.push(request);
          const h = request.headers;
          const ok = request.method === 'PUBLISH';
          const lines = [
            ok ? 'SIP/2.0 200 OK' : 'SIP/2.0 405 Method Not Allowed',
            ...h.getAll('via').map((v) => `Via: ${v}`),
            `From: ${h.get('from') ?? ''}`,
            `To: ${h.get('to') ?? ''};tag=tls-test`,
            `Call-ID: ${h.get('call-id') ?? ''}`,
            `CSeq: ${h.get('cseq') ?? ''}`,
            ...(ok ? [`SIP-ETag: tls-etag-${++etags}`, `Expires: ${h.get('expires') ?? '3600'}`] : []),
            'Content-Length: 0',
          ];
          socket.write(`${lines.join('\r\n')}\r\n\r\n`);
        }
      });
    },
  );
  server.on('tlsClientError', (error: Error & { code?: string }) => handshakeErrors.push(error.code ?? error.message));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    requests,
    clientSubjects,
    handshakeErrors,
    close: () =>
      new Promise((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
