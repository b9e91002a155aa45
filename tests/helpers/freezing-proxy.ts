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
  /** How many connections were opened through the proxy so far. */
  readonly opened: number;
  close(): Promise<void>;
}

export async function startFreezingProxy(target: { host: string; port: number }): Promise<FreezingProxy> {
  const pairs = new Set<{ client: Socket; upstream: Socket; frozen: boolean }>();
  let opened = 0;
  const server: Server = createServer((client) => {
    opened += 1;
    const upstream = connect(target.port, target.host);
    const pair = { client, upstream, frozen: false };
    pairs.add(pair);
    const forward = (from: Socket, to: Socket) =>
      from.on('data', (chunk) => {
        if (!pair.frozen) to.write(chunk);
      });
    forward(client, upstream);
    forward(upstream, client);
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
    close: async () => {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
