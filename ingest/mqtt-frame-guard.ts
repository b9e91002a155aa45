import type { Duplex } from 'node:stream';

/**
 * Reads MQTT fixed headers (MQTT 3.1.1 §2.2) as bytes arrive and reports a
 * packet whose declared length exceeds the limit as soon as its header is
 * seen, before the body is buffered. aedes has no packet-size limit of its
 * own, so without this any client, even before authenticating, could make
 * the broker buffer up to 256 MB per packet.
 */
export type FrameVerdict = 'ok' | 'too_large' | 'malformed';

export class FrameSizeChecker {
  private state: 'type' | 'length' | 'body' = 'type';
  private length = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;

  constructor(private readonly maxRemainingLength: number) {}

  push(chunk: Uint8Array): FrameVerdict {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'type') {
        i += 1;
        this.state = 'length';
        this.length = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const byte = chunk[i++] as number;
        this.length += (byte & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes += 1;
        if (this.length > this.maxRemainingLength) return 'too_large';
        if ((byte & 0x80) === 0) {
          this.remaining = this.length;
          this.state = this.remaining === 0 ? 'type' : 'body';
        } else if (this.lengthBytes === 4) {
          return 'malformed'; // §2.2.3: at most four bytes
        }
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'type';
      }
    }
    return 'ok';
  }
}

/** Destroys the connection (a TCP or TLS socket, or a WebSocket stream) at the first oversized or malformed packet header. */
export function guardFrames(socket: Duplex, maxRemainingLength: number, onViolation: (verdict: FrameVerdict) => void): void {
  const checker = new FrameSizeChecker(maxRemainingLength);
  socket.on('data', (chunk: Buffer) => {
    const verdict = checker.push(chunk);
    if (verdict !== 'ok') {
      onViolation(verdict);
      socket.destroy();
    }
  });
}
