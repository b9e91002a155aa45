import { connectAsync } from 'mqtt';

/**
 * The load generator, run as its own process so it does not share an event
 * loop with what it measures. Publishes `count` sensor events round-robin
 * over the given device topics at the given QoS, keeping at most `window`
 * unacknowledged (QoS 1) or unflushed (QoS 0) publishes, then exits.
 *
 * Event i is dated firstAt + i ms: the harness gives each run a range after
 * the previous one, so every event is newer than what its device last sent
 * and really goes through merge and derivation.
 *
 * argv: url qos count window firstAt topicsJson
 */
const [url, qosArg, countArg, windowArg, firstAtArg, topicsJson] = process.argv.slice(2);
const qos = Number(qosArg) as 0 | 1;
const count = Number(countArg);
const window = Number(windowArg);
const firstAt = Number(firstAtArg);
const topics = JSON.parse(topicsJson ?? '[]') as string[];
if (!url || !topics.length || !(count > 0) || !(firstAt > 0)) throw new Error('usage: publisher url qos count window firstAt topicsJson');

const client = await connectAsync(url, { clean: true, clientId: `bench-pub-${process.pid}`, protocolVersion: 4 });
let sent = 0;
let inFlight = 0;
await new Promise<void>((resolve, reject) => {
  const pump = () => {
    while (inFlight < window && sent < count) {
      const i = sent++;
      inFlight++;
      // ~140 bytes, like a phone's event; alternating states so presence really changes.
      const payload = `{"kind":"user-input","at":"${new Date(firstAt + i).toISOString()}","state":"${i % 2 ? 'active' : 'idle'}","lastInput":"${new Date(firstAt).toISOString()}"}`;
      client.publish(topics[i % topics.length] as string, payload, { qos }, (error) => {
        if (error) return reject(error);
        inFlight--;
        if (sent === count && inFlight === 0) resolve();
        else if (inFlight < window / 2) setImmediate(pump);
      });
    }
  };
  pump();
});
await client.endAsync();
