import { execFile } from 'node:child_process';
import { cp, readFile, readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import pg from 'pg';
import t from 'tap';
import { openDatabase } from '../../core/db/connect.js';
import { createTestDatabase, projectRoot, tempDir } from '../helpers/env.js';

const run = promisify(execFile);

async function listing(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const entry of await readdir(dir, { recursive: true, withFileTypes: true })) {
    if (!entry.isFile()) continue;
    const path = join(entry.parentPath, entry.name);
    out[path.slice(dir.length)] = await readFile(path, 'utf8');
  }
  return out;
}

t.test('regenerating the migrations from the schema changes nothing', async (t) => {
  const out = await tempDir(t);
  await cp(join(projectRoot, 'migrations'), out, { recursive: true });
  const { stdout } = await run(
    join(projectRoot, 'node_modules', '.bin', 'drizzle-kit'),
    // drizzle-kit reads --out relative to the working directory, and exits 0 even on failure.
    ['generate', '--dialect=postgresql', '--schema=./core/db/schema.ts', `--out=${relative(projectRoot, out)}`],
    { cwd: projectRoot },
  );
  t.match(stdout, /No schema changes/, 'drizzle-kit finds nothing to generate');
  t.same(await listing(out), await listing(join(projectRoot, 'migrations')), 'and writes nothing');
});

t.test('migrations apply once, concurrently and repeatedly, on PostgreSQL', async (t) => {
  const url = await createTestDatabase(t);
  const handles = await Promise.all([openDatabase({ kind: 'postgres', url }), openDatabase({ kind: 'postgres', url })]);
  await Promise.all(handles.map((h) => h.close()));
  const again = await openDatabase({ kind: 'postgres', url });
  await again.close();

  const journal = JSON.parse(await readFile(join(projectRoot, 'migrations', 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  const applied = await client.query('select count(*)::int as n from drizzle.__drizzle_migrations');
  const tables = await client.query("select table_name from information_schema.tables where table_schema = 'public' order by 1");
  await client.end();
  t.equal(applied.rows[0].n, journal.entries.length, 'each migration recorded once');
  t.same(
    tables.rows.map((r: { table_name: string }) => r.table_name),
    ['access_log', 'access_requests', 'admin_actions', 'admin_token_cutoffs', 'consent_rules', 'devices', 'external_identities', 'owners', 'presence_overrides', 'presence_state', 'raw_events', 'signing_keys', 'token_revocations', 'watcher_groups', 'watchers', 'webhooks'],
  );
});
