// Lint rules, including the import direction of ../shared/DESIGN.md:
// api -> policy -> core, ingest -> core; api and ingest never import each
// other; core and policy import no I/O library (core/db excepted).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

const ioLibraries = ['fastify', 'fastify-*', 'mqtt', 'aedes', 'pg', '@electric-sql/*', 'drizzle-orm', 'drizzle-orm/*', 'pino', 'node:fs', 'node:fs/*', 'node:net', 'node:http', 'node:child_process'];

const noIo = { group: ioLibraries, message: 'core/ and policy/ stay free of I/O (DESIGN.md); use core/db or an edge.' };
const noEdges = { group: ['**/api/**', '**/ingest/**', '**/bin/**', '**/bench/**'], message: 'core/ and policy/ do not import the edges.' };
const noProcess = { name: 'process', message: 'read configuration in bin/ and pass it in' };

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**', 'migrations/**', 'tests/schemas/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', ignoreRestSiblings: true }],
    },
  },
  {
    files: ['core/**/*.ts'],
    ignores: ['core/db/**'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [noIo, noEdges, { group: ['**/policy/**'], message: 'imports flow api -> policy -> core' }] }],
      'no-restricted-globals': ['error', noProcess],
    },
  },
  {
    files: ['core/db/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [noEdges, { group: ['**/policy/**'], message: 'imports flow api -> policy -> core' }] }] },
  },
  {
    files: ['policy/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [noIo, noEdges] }],
      'no-restricted-globals': ['error', noProcess],
    },
  },
  {
    files: ['api/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/ingest/**'], message: 'api and ingest never import each other' }] }] },
  },
  {
    files: ['ingest/**/*.ts'],
    rules: { 'no-restricted-imports': ['error', { patterns: [{ group: ['**/api/**', '**/policy/**'], message: 'ingest imports core only' }] }] },
  },
);
