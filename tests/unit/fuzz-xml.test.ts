import fc from 'fast-check';
import { Worker } from 'node:worker_threads';
import t from 'tap';
import { idSchema } from '../../core/identifiers.js';
import { activitySchema, availabilitySchema } from '../../core/presence.js';
import { isPrintableText } from '../../core/text.js';
import { ruleBodySchema } from '../../policy/rule.js';
import { documentArb } from '../helpers/xml-documents.js';

/**
 * Fuzzing the inbound XML readers (issue: "Fuzzing: generated hostile
 * input"): core/parse-xml.ts parseXml, core/parse-pidf.ts parsePidf and
 * policy/pres-rules-xml.ts importPresRules, each fed every generated
 * document (seeded, so a failure replays).
 *
 * Documents: mutations of valid PIDF and pres-rules documents (the golden
 * samples under tests/schemas/samples, and what renderPidf and
 * exportPresRules write), grammar-built documents in the PIDF and
 * pres-rules vocabularies with hostile values, random markup, entity tricks
 * (billion laughs, external and parameter entities, DOCTYPE variants,
 * character references in and out of range), deep nesting, huge attribute
 * counts, CDATA / comment / processing-instruction edge cases and namespace
 * prefix games.
 *
 * Property: each call returns a value or throws an AppError with code
 * invalid_document or invalid_request, never anything else, and finishes
 * within CASE_TIMEOUT_MS. Each call runs in a worker thread that a watchdog
 * terminates when a case takes longer, so a hang is reported with its
 * document instead of stalling the file. What is returned must itself be
 * valid: a PIDF reading with a known availability, known activities and a
 * printable note; pres-rules whose every body passes ruleBodySchema.
 */

/** Fixed, so runs are reproducible; FUZZ_SEED explores others. */
const SEED = Number(process.env.FUZZ_SEED ?? 0x0d0c_2026);
const DOCUMENTS = 2_400;
const CASE_TIMEOUT_MS = 3_000;
const TARGETS = ['parseXml', 'parsePidf', 'importPresRules'] as const;
type Target = (typeof TARGETS)[number];

// --- the sandbox: each call in a worker, under a watchdog ----------------------------------

type Outcome =
  | { readonly kind: 'value'; readonly value: unknown; readonly ms: number }
  | { readonly kind: 'app-error'; readonly code: string; readonly message: string; readonly ms: number }
  | { readonly kind: 'other-error'; readonly name: string; readonly message: string; readonly stack: string; readonly ms: number }
  | { readonly kind: 'hang' };

const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
(async () => {
  const [{ parseXml }, { parsePidf }, { importPresRules }, { AppError }] = await Promise.all(workerData.modules.map((url) => import(url)));
  // parseXml's element tree has prototype-less attribute records: made plain for the message.
  const plain = (e) => ({ ns: e.ns, name: e.name, attributes: { ...e.attributes }, text: e.text, children: e.children.map(plain) });
  // Two self-checks of the oracle: an exception that is not an AppError, and a case that never ends.
  const run = { parseXml: (doc) => plain(parseXml(doc)), parsePidf, importPresRules, notAppError: () => parseXml(42), spin: () => { for (;;); } };
  parentPort.on('message', ({ target, doc }) => {
    if (target === 'prototype') return parentPort.postMessage(Reflect.ownKeys(Object.prototype).map(String).sort());
    const started = performance.now();
    try {
      const value = run[target](doc);
      parentPort.postMessage({ kind: 'value', value, ms: performance.now() - started });
    } catch (error) {
      const ms = performance.now() - started;
      if (error instanceof AppError) parentPort.postMessage({ kind: 'app-error', code: error.code, message: error.message, ms });
      else parentPort.postMessage({ kind: 'other-error', name: error?.constructor?.name ?? typeof error, message: String(error?.message ?? error), stack: String(error?.stack ?? ''), ms });
    }
  });
  parentPort.postMessage('ready');
})().catch((error) => { throw error; });
`;

const MODULES = ['../../core/parse-xml.js', '../../core/parse-pidf.js', '../../policy/pres-rules-xml.js', '../../core/errors.js'].map((path) => new URL(path, import.meta.url).href);

class Sandbox {
  private worker: Worker | undefined;

  private async start(): Promise<Worker> {
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { modules: MODULES } });
    await new Promise<void>((resolve, reject) => {
      worker.once('message', () => resolve());
      worker.once('error', reject);
    });
    this.worker = worker;
    return worker;
  }

  async run(target: Target | 'prototype' | 'notAppError' | 'spin', doc: string, timeoutMs = CASE_TIMEOUT_MS): Promise<unknown> {
    const worker = this.worker ?? (await this.start());
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        worker.removeAllListeners('message');
        this.worker = undefined;
        void worker.terminate();
        resolve({ kind: 'hang' });
      }, timeoutMs);
      worker.once('message', (message: unknown) => {
        clearTimeout(timer);
        resolve(message);
      });
      worker.postMessage({ target, doc });
    });
  }

  async close(): Promise<void> {
    await this.worker?.terminate();
  }
}

// --- checks on what is returned --------------------------------------------------------

function problemsWithValue(target: Target, value: unknown): string | undefined {
  if (target === 'parsePidf') {
    const v = value as { entity?: unknown; availability?: unknown; activities?: unknown; note?: unknown };
    if (typeof v.entity !== 'string' || v.entity === '') return 'entity is not a non-empty string';
    if (!availabilitySchema.safeParse(v.availability).success) return `availability ${JSON.stringify(v.availability)} is not one the service knows`;
    if (!Array.isArray(v.activities) || !v.activities.every((a) => activitySchema.safeParse(a).success)) return `activities ${JSON.stringify(v.activities)} are not all known`;
    if (v.note !== undefined && (typeof v.note !== 'string' || v.note.length === 0 || v.note.length > 200 || !isPrintableText(v.note))) return `note ${JSON.stringify(v.note)} is not short printable text`;
    return undefined;
  }
  if (target === 'importPresRules') {
    if (!Array.isArray(value) || value.length > 200) return 'not a list of at most 200 rules';
    for (const [i, item] of (value as { id?: unknown; body?: unknown }[]).entries()) {
      const body = ruleBodySchema.safeParse(item.body);
      if (!body.success) return `rule ${i} does not pass ruleBodySchema: ${body.error.issues[0]?.message}`;
      if (item.id !== undefined && !idSchema.safeParse(item.id).success) return `rule ${i} has id ${JSON.stringify(item.id)}`;
    }
    return undefined;
  }
  const walk = (e: { ns: unknown; name: unknown; attributes: Record<string, unknown>; children: unknown[]; text: unknown }): string | undefined => {
    if (typeof e.name !== 'string' || e.name === '' || e.name.includes(':')) return `element name ${JSON.stringify(e.name)} is not a local name`;
    if (typeof e.ns !== 'string' || typeof e.text !== 'string') return 'ns or text is not a string';
    for (const [name, attribute] of Object.entries(e.attributes)) if (name.includes(':') || typeof attribute !== 'string') return `attribute ${name} is not a local name with a string value`;
    for (const child of e.children) {
      const problem = walk(child as typeof e);
      if (problem) return problem;
    }
    return undefined;
  };
  return walk(value as Parameters<typeof walk>[0]);
}

// --- the run -------------------------------------------------------------------------------

t.test(`${DOCUMENTS} generated hostile XML documents, each through parseXml, parsePidf and importPresRules (seed ${SEED})`, async (t) => {
  const documents = fc.sample(documentArb, { numRuns: DOCUMENTS, seed: SEED });
  const sandbox = new Sandbox();
  t.teardown(() => sandbox.close());
  const protoBefore = await sandbox.run('prototype', '');
  t.match(await sandbox.run('notAppError', ''), { kind: 'other-error', name: 'TypeError' }, 'self-check: the oracle tells another exception from an AppError');
  t.same(await sandbox.run('spin', '', 200), { kind: 'hang' }, 'self-check: the watchdog ends a case that never returns');

  const failures = { otherErrors: [] as object[], wrongCodes: [] as object[], hangs: [] as object[], badValues: [] as object[] };
  const accepted: Record<Target, number> = { parseXml: 0, parsePidf: 0, importPresRules: 0 };
  const families = new Map<string, { cases: number; accepted: number }>();
  const messages = new Map<string, number>();
  let slowest = { ms: 0, target: '', family: '', bytes: 0 };
  let cases = 0;
  const started = performance.now();

  for (const [i, { family, doc }] of documents.entries()) {
    const stats = families.get(family) ?? { cases: 0, accepted: 0 };
    families.set(family, stats);
    for (const target of TARGETS) {
      cases += 1;
      stats.cases += 1;
      const outcome = (await sandbox.run(target, doc)) as Outcome;
      const where = { i, family, target, bytes: Buffer.byteLength(doc), doc: doc.length > 600 ? `${doc.slice(0, 600)}…` : doc };
      if (outcome.kind === 'hang') {
        failures.hangs.push(where);
        continue;
      }
      if (outcome.ms > slowest.ms) slowest = { ms: Math.round(outcome.ms), target, family, bytes: where.bytes };
      if (outcome.ms > CASE_TIMEOUT_MS) failures.hangs.push({ ...where, ms: outcome.ms });
      if (outcome.kind === 'other-error') failures.otherErrors.push({ ...where, error: `${outcome.name}: ${outcome.message}`, stack: outcome.stack.split('\n').slice(0, 4).join(' | ') });
      else if (outcome.kind === 'app-error') {
        if (outcome.code !== 'invalid_document' && outcome.code !== 'invalid_request') failures.wrongCodes.push({ ...where, code: outcome.code, message: outcome.message });
        const gist = outcome.message.replace(/'[^']*'|"[^"]*"|<[^>]*>|&[^;\s]*;|U\+[0-9A-F]+|\d+/g, '…').slice(0, 70);
        messages.set(gist, (messages.get(gist) ?? 0) + 1);
      } else {
        accepted[target] += 1;
        stats.accepted += 1;
        const problem = problemsWithValue(target, outcome.value);
        if (problem) failures.badValues.push({ ...where, problem });
      }
    }
  }
  const elapsed = performance.now() - started;

  const show = (list: object[]) => ({ count: list.length, first: list.slice(0, 3) });
  t.equal(cases, DOCUMENTS * TARGETS.length, `${cases} cases run`);
  t.same(show(failures.otherErrors), { count: 0, first: [] }, 'no exception other than an AppError');
  t.same(show(failures.wrongCodes), { count: 0, first: [] }, 'every AppError is invalid_document or invalid_request');
  t.same(show(failures.hangs), { count: 0, first: [] }, `every case finishes within ${CASE_TIMEOUT_MS} ms`);
  t.same(show(failures.badValues), { count: 0, first: [] }, 'every returned value is itself valid (PIDF reading, rule bodies, element tree)');
  t.same(await sandbox.run('prototype', ''), protoBefore, "Object.prototype in the parsers' thread keeps exactly its own keys");

  // The corpus is not all noise: valid documents survive some mutations, so the readers' deeper code runs.
  t.ok(accepted.parsePidf > 50, `parsePidf accepted ${accepted.parsePidf} documents`);
  t.ok(accepted.importPresRules > 50, `importPresRules accepted ${accepted.importPresRules} documents`);
  t.ok(accepted.parseXml > 500, `parseXml accepted ${accepted.parseXml} documents`);
  t.ok(messages.size > 60, `${messages.size} distinct kinds of refusal`);
  for (const [family, s] of families) t.comment(`${family}: ${s.cases} cases, ${s.accepted} returned a value`);
  t.comment(`${cases} cases in ${Math.round(elapsed)} ms; slowest ${JSON.stringify(slowest)}`);
});
