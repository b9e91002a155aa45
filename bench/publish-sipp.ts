import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createUdpTransport } from '../api/sip/transport.js';
import { projectRoot } from '../tests/helpers/env.js';
import { freeSipPort } from '../tests/helpers/kamailio.js';

/**
 * The baseline side of bench/publish.ts: a private Kamailio 5.6 presence
 * server on ephemeral ports, configured from the project's own template
 * (tests/kamailio/kamailio.cfg.template, the one the SIP integration test
 * uses), and sipp driving it with chains of SIP PUBLISH modifications
 * (RFC 3903 §4.4) over UDP, read from sipp's per-message counters.
 *
 * Differences from the test set-up (tests/helpers/kamailio.ts), all in
 * Kamailio's favour: 1 GB of shared memory instead of 64 MB (at 64 MB
 * Kamailio caps at ~650 PUBLISH/s: each transaction holds ~14 KB for 5 s;
 * /work/shared/kamailio/README.md), and debug=1 instead of 2, so it does not
 * write an INFO log line per request (the service runs at LOG_LEVEL=warn).
 * Storage 'memory' is the template's IN_MEMORY variant (publ_cache=2,
 * subs_db_mode=0), Kamailio's fastest configuration (/work/shared/STACK.md);
 * 'sqlite' keeps publications in the sqlite database as the template's
 * default does.
 *
 * Only processes started here are stopped, by their own PID (Kamailio: its
 * own process group, i.e. the workers it forked).
 */

const run = promisify(execFile);
const SQL_DIR = '/usr/share/kamailio/db_sqlite';

/**
 * One call = one presentity sip:[run]u[call_number]@[domain]: an initial
 * PUBLISH (no SIP-If-Match) expecting 200 and a SIP-ETag, then for ever a
 * modification: SIP-If-Match with the last SIP-ETag and a changed body (a
 * counter in the note), expecting 200 with a new SIP-ETag. With -l N sipp
 * keeps N calls, so N chains with one transaction in flight each, like N
 * keep-alive HTTP connections. A call that gets anything else is aborted
 * (-default_behaviors abortunexp) and a new call (a new chain) takes its
 * place. The body is ~600 bytes, the shape of publish-load.xml in
 * /work/shared/kamailio/sipp. Via branch and CSeq change per request
 * ([branch] alone repeats in a loop and Kamailio would take the request
 * for a retransmission). retrans="500": SIP T1 over UDP.
 */
export const MODIFY_SCENARIO = `<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="publish-modify">
  <send retrans="500">
    <![CDATA[

      PUBLISH sip:[run]u[call_number]@[domain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      Max-Forwards: 70
      From: <sip:[run]u[call_number]@[domain]>;tag=[pid]L[call_number]
      To: <sip:[run]u[call_number]@[domain]>
      Call-ID: [call_id]
      CSeq: [cseq] PUBLISH
      Event: presence
      Expires: 3600
      Content-Type: application/pidf+xml
      Content-Length: [len]

${pidf('initial')}
    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="[^ \\t]+" search_in="hdr" header="SIP-ETag:" check_it="true" assign_to="etag"/>
    </action>
  </recv>
  <label id="1"/>
  <nop><action><add assign_to="n" value="1"/></action></nop>
  <send retrans="500">
    <![CDATA[

      PUBLISH sip:[run]u[call_number]@[domain] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]n[cseq]
      Max-Forwards: 70
      From: <sip:[run]u[call_number]@[domain]>;tag=[pid]L[call_number]
      To: <sip:[run]u[call_number]@[domain]>
      Call-ID: [call_id]
      CSeq: [cseq] PUBLISH
      Event: presence
      Expires: 3600
      SIP-If-Match: [$etag]
      Content-Type: application/pidf+xml
      Content-Length: [len]

${pidf('modify [$n]')}
    ]]>
  </send>
  <recv response="200">
    <action>
      <ereg regexp="[^ \\t]+" search_in="hdr" header="SIP-ETag:" check_it="true" assign_to="etag"/>
    </action>
  </recv>
  <nop next="1"/>
</scenario>
`;

/** The counter of successful modifications in sipp's counts file: message 4 (the second recv), 200 received. */
const MODIFY_OK = '4_200_Recv';

function pidf(note: string): string {
  return `      <?xml version="1.0" encoding="UTF-8"?>
      <presence xmlns="urn:ietf:params:xml:ns:pidf" xmlns:dm="urn:ietf:params:xml:ns:pidf:data-model" xmlns:rpid="urn:ietf:params:xml:ns:pidf:rpid" entity="sip:[run]u[call_number]@[domain]">
        <tuple id="t1">
          <status><basic>open</basic></status>
          <contact priority="0.8">sip:[run]u[call_number]@[domain]</contact>
          <note>room sensor online; occupancy=1; battery=87%; ${note}</note>
          <timestamp>2026-01-01T12:00:00.000Z</timestamp>
        </tuple>
        <dm:person id="p1">
          <rpid:activities><rpid:meeting/></rpid:activities>
          <dm:note>occupied</dm:note>
        </dm:person>
      </presence>
`;
}

/** CPU time (user + system) of a process, µs, from /proc (Linux); 0 once it is gone. */
export async function cpuOf(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!stat) return 0;
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), in clock ticks (100 per second on Linux).
  return (Number(fields[11]) + Number(fields[12])) * 10_000;
}

/** Summed CPU time (µs) of the processes for which `match` holds, given their /proc stat fields after the command name and their command line. */
export async function cpuOfProcesses(match: (fields: readonly string[], cmdline: string) => boolean): Promise<number> {
  let total = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (!stat) continue;
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const cmdline = (await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')).replaceAll('\0', ' ');
    if (match(fields, cmdline)) total += (Number(fields[11]) + Number(fields[12])) * 10_000;
  }
  return total;
}

export interface BenchKamailio {
  readonly port: number;
  readonly storage: 'memory' | 'sqlite';
  /** CPU time of Kamailio and all its workers (its process group), µs. */
  cpu(): Promise<number>;
  log(): Promise<string>;
  stop(): Promise<void>;
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

async function stopChild(child: ChildProcess, group: boolean): Promise<void> {
  const pid = child.pid;
  if (pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill('SIGTERM');
  if (await waitExit(child, 5000)) return;
  try {
    if (group) process.kill(-pid, 'SIGKILL');
    else child.kill('SIGKILL');
  } catch {
    // already gone
  }
  await waitExit(child, 2000);
}

/** Starts Kamailio from the project's template on a free port; resolves once it answers OPTIONS. */
export async function startBenchKamailio(storage: 'memory' | 'sqlite'): Promise<BenchKamailio> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-publish-kamailio-'));
  const port = await freeSipPort();
  const template = await readFile(join(projectRoot, 'tests', 'kamailio', 'kamailio.cfg.template'), 'utf8');
  if (!/^debug=2$/m.test(template)) throw new Error('the Kamailio template no longer sets debug=2; check what bench/publish-sipp.ts changes');
  const config = template.replaceAll('{{PORT}}', String(port)).replaceAll('{{RUNDIR}}', dir).replaceAll('{{PASSWORD}}', '').replace(/^debug=2$/m, 'debug=1');
  const cfg = join(dir, 'kamailio.cfg');
  await writeFile(cfg, config);
  const db = join(dir, 'presence.db');
  const defines: string[] = [];
  if (storage === 'memory') {
    // IN_MEMORY still needs the database file (db_url makes the module a full presence server).
    await writeFile(db, '');
    defines.push('-A', 'IN_MEMORY');
  } else {
    for (const schema of ['standard-create.sql', 'presence-create.sql']) await run('sh', ['-c', `sqlite3 "${db}" < "${join(SQL_DIR, schema)}"`]);
    await run('sqlite3', [db, 'PRAGMA journal_mode=WAL;']);
  }
  await run('kamailio', ['-c', '-f', cfg, ...defines]);
  const logFile = join(dir, 'kamailio.log');
  const fd = openSync(logFile, 'a');
  // -DD: no daemon (it still forks its workers); -E: log to stderr; -m: shared memory (MB); detached: its own process group.
  const child = spawn('kamailio', ['-f', cfg, '-DD', '-E', '-m', '1024', '-M', '8', ...defines], { stdio: ['ignore', fd, fd], detached: true });
  closeSync(fd);
  const pgid = String(child.pid ?? -1);
  const log = (): Promise<string> => readFile(logFile, 'utf8').catch(() => '');
  const stop = async (): Promise<void> => {
    await stopChild(child, true);
    await rm(dir, { recursive: true, force: true });
  };
  const probe = await createUdpTransport({ remoteHost: '127.0.0.1', remotePort: port, timers: { t1Ms: 50, timerFMs: 200 } });
  try {
    for (let i = 0; ; i++) {
      if (child.exitCode !== null) throw new Error(`kamailio exited (code ${child.exitCode}): ${(await log()).slice(-2000)}`);
      const ok = await probe
        .send({ method: 'OPTIONS', requestUri: `sip:127.0.0.1:${port}`, from: { uri: 'sip:probe@127.0.0.1', tag: `p${i}` }, to: { uri: `sip:127.0.0.1:${port}` }, callId: `bench-probe-${i}-${port}`, cseq: 1 })
        .then((r) => r.status === 200)
        .catch(() => false);
      if (ok) break;
      if (i > 50) throw new Error(`kamailio did not answer on port ${port}: ${(await log()).slice(-2000)}`);
    }
  } catch (error) {
    await stop();
    throw error;
  } finally {
    await probe.close();
  }
  // Field 5 of stat(5) (index 2 after the command name) is the process group.
  return { port, storage, cpu: () => cpuOfProcesses((fields) => fields[2] === pgid), log, stop };
}

export interface SippSpec {
  readonly kamailio: BenchKamailio;
  /** Simultaneous calls = modification chains. */
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Prefix of this run's presentities, distinct per run. */
  readonly run: string;
}

export interface SippResult {
  /** Modifications answered 200 (with a SIP-ETag) in the window. */
  readonly ok: number;
  readonly rate: number;
  /** Unexpected answers and transaction timeouts in the window (each restarts a chain). */
  readonly failed: number;
  /** The failure counters that moved, e.g. "4_200_Unexp 12". */
  readonly failures: string;
  /** UDP retransmissions of modifications in the window. */
  readonly retransmissions: number;
  /** The window as sipp's counters saw it, ms (rows are written about once a second). */
  readonly windowMs: number;
  /** CPU of sipp and of Kamailio over the window, shares of one core. */
  readonly clientCpu: number;
  readonly serverCpu: number;
  /** Kamailio's CPU time per successful modification, µs. */
  readonly serverCpuUs: number;
}

interface CountsRow {
  readonly at: number;
  readonly values: ReadonlyMap<string, number>;
}

/** sipp's -trace_counts file: `CurrentTime;ElapsedTime;<index>_<message>_<counter>;...`, cumulative, one row per -fd period. */
function parseCounts(text: string): CountsRow[] {
  const [header, ...lines] = text.split('\n').filter((l) => l.trim());
  const names = (header ?? '').split(';');
  return lines.map((line) => {
    const cells = line.split(';');
    // CurrentTime is "date<TAB>time<TAB>epoch.micros".
    const at = Number((cells[0] ?? '').split('\t').at(-1)) * 1000;
    const values = new Map<string, number>();
    names.forEach((name, i) => {
      if (i >= 2 && name) values.set(name, Number(cells[i] ?? 0));
    });
    return { at, values };
  });
}

/**
 * Runs the modification chains for warm-up + duration, then stops sipp
 * (its calls never end by themselves). The rate is the growth of the
 * counter of modifications answered 200 between the first counts row at or
 * after the warm-up and the last one at or before the window's end, over
 * the time between those rows.
 */
export async function runSipp(spec: SippSpec): Promise<SippResult> {
  const dir = await mkdtemp(join(tmpdir(), 'bench-publish-sipp-'));
  try {
    const scenario = join(dir, 'publish-modify.xml');
    await writeFile(scenario, MODIFY_SCENARIO);
    const port = await freeSipPort();
    const args = [
      `127.0.0.1:${spec.kamailio.port}`,
      '-sf',
      scenario,
      // Plenty of calls, at most `concurrency` at once, started as fast as sipp can.
      '-m',
      '100000000',
      '-l',
      String(spec.concurrency),
      '-r',
      '100000',
      '-i',
      '127.0.0.1',
      '-p',
      String(port),
      '-t',
      'u1',
      '-nostdin',
      '-key',
      'run',
      spec.run,
      '-key',
      'domain',
      '127.0.0.1',
      '-default_behaviors',
      'abortunexp',
      '-trace_counts',
      '-fd',
      '1',
    ];
    const t0 = performance.now();
    const startedAtWall = Date.now();
    const child = spawn('sipp', args, { cwd: dir, stdio: 'ignore' });
    const sample = async () => ({ at: performance.now(), client: await cpuOf(child.pid ?? -1), server: await spec.kamailio.cpu() });
    const until = (ms: number) => new Promise((r) => setTimeout(r, Math.max(0, t0 + ms - performance.now())));
    let start: Awaited<ReturnType<typeof sample>>;
    let end: Awaited<ReturnType<typeof sample>>;
    try {
      await until(spec.warmupMs);
      start = await sample();
      await until(spec.warmupMs + spec.durationMs);
      end = await sample();
      // One more counts row after the window's end, then stop sipp (SIGTERM; its calls never end by themselves).
      await until(spec.warmupMs + spec.durationMs + 1200);
    } finally {
      await stopChild(child, false);
    }

    const countsFile = (await readdir(dir)).find((f) => f.endsWith('_counts.csv'));
    if (!countsFile) throw new Error('sipp wrote no counts file (did it start?)');
    const rows = parseCounts(await readFile(join(dir, countsFile), 'utf8'));
    // Rows carry wall-clock times, about one a second from sipp's start (a few ms after the spawn, drifting a few ms a second).
    const from = rows.find((r) => r.at >= startedAtWall + spec.warmupMs);
    const to = [...rows].reverse().find((r) => r.at <= startedAtWall + spec.warmupMs + spec.durationMs + 300);
    if (!from || !to || to.at <= from.at) throw new Error(`sipp's counts do not cover the window (${rows.length} rows)`);
    const delta = (pick: (name: string) => boolean) => {
      let sum = 0;
      for (const [name, value] of to.values) if (pick(name)) sum += value - (from.values.get(name) ?? 0);
      return sum;
    };
    const ok = delta((n) => n === MODIFY_OK);
    const isFailure = (n: string) => n.endsWith('_Unexp') || n.endsWith('_Timeout');
    const windowMs = to.at - from.at;
    const elapsedUs = (end.at - start.at) * 1000;
    return {
      ok,
      rate: (ok * 1000) / windowMs,
      failed: delta(isFailure),
      failures: [...to.values.keys()]
        .filter(isFailure)
        .map((n) => `${n} ${delta((m) => m === n)}`)
        .filter((t) => !t.endsWith(' 0'))
        .join(', '),
      retransmissions: delta((n) => n === '3_PUBLISH_Retrans'),
      windowMs,
      clientCpu: (end.client - start.client) / elapsedUs,
      serverCpu: (end.server - start.server) / elapsedUs,
      serverCpuUs: (end.server - start.server) / ((ok * (end.at - start.at)) / windowMs),
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
