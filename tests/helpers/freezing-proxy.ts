import { connect, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy on an ephemeral loopback port that can go silent: freeze()
 * makes every connection open at that moment drop what either side sends,
 * as a server that stopped answering (packets dropped on the way, a disk
 * stall) would look from the client. Connections opened afterwards pass
 * normally. Closing either side closes the other.
 */
export interface FreezingProxy {
  readonly port: number;
  /** The connections open now go silent for good. */
  freeze(): void;
  /**
   * The next connection whose client sends bytes containing `marker` (a
   * prepared statement's name is in every Bind message) gets no more
   * answers: what it sent reaches the server and runs, commits included,
   * but the client never hears of it (a lost answer).
   */
  loseAnswersAfter(marker: string): void;
  /** How many connections were opened through the proxy so far. */
  readonly opened: number;
  close(): Promise<void>;
}

export async function startFreezingProxy(target: { host: string; port: number }): Promise<FreezingProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket; frozen: boolean; answersLost: boolean }>();
  let opened = 0;
  let armed: Buffer | undefined;
  const server: Server = createServer((client) => {
    opened += 1;
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream, frozen: false, answersLost: false };
    pairs.add(pair);
    client.on('data', (chunk: Buffer) => {
      if (pair.frozen) return;
      upstream.write(chunk);
      if (armed && chunk.includes(armed)) {
        armed = undefined;
        pair.answersLost = true;
      }
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!pair.frozen && !pair.answersLost) client.write(chunk);
    });
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    for (const socket of [client, upstream]) socket.on('close', end).on('error', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  if (typeof address !== 'object' || !address) throw new Error('the proxy has no port');
  return {
    port: address.port,
    get opened() {
      return opened;
    },
    freeze() {
      for (const pair of pairs) pair.frozen = true;
    },
    loseAnswersAfter(marker: string) {
      armed = Buffer.from(marker, 'latin1');
    },
    close: async () => {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
