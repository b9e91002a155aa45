import t from 'tap';
import { negotiate } from '../../api/negotiate.js';

const offers = ['application/pidf+xml', 'application/json'] as const;
const cases: [string | undefined, string | undefined][] = [
  [undefined, 'application/pidf+xml'],
  ['', 'application/pidf+xml'],
  ['*/*', 'application/pidf+xml'],
  ['application/json', 'application/json'],
  ['application/pidf+xml', 'application/pidf+xml'],
  ['application/*', 'application/pidf+xml'],
  ['application/json, application/pidf+xml;q=0.5', 'application/json'],
  ['application/pidf+xml;q=0.1, application/json;q=0.9', 'application/json'],
  ['*/*;q=0.1, application/json', 'application/json'],
  ['text/html', undefined],
  ['application/json;q=0', undefined],
  ['*/*, application/pidf+xml;q=0', 'application/json'],
  ['APPLICATION/JSON', 'application/json'],
];
for (const [accept, expected] of cases) {
  t.test(`Accept: ${accept ?? '(none)'}`, async (t) => t.equal(negotiate(accept, offers), expected));
}
