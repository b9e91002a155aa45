import t from 'tap';
import {
  renderWatcherInfo,
  watcherElementId,
  WATCHERINFO_MEDIA_TYPE,
  type WatcherEvent,
  type WatcherInfoInput,
  type WatcherStatus,
} from '../../core/render-watcherinfo.js';
import { validatePidf } from '../helpers/pidf-validator.js';

const resource = 'pres:alice@example.com';
const bob = '6f1c2a34-0b1d-4c5e-9f00-123456789abc';
const carol = 'b7e1d0c2-5a4f-4e3b-8c2d-0123456789ef';

const statuses: readonly WatcherStatus[] = ['pending', 'active', 'waiting', 'terminated'];
const events: readonly WatcherEvent[] = ['subscribe', 'approved', 'deactivated', 'probation', 'rejected', 'timeout', 'giveup', 'noresource'];

/** Golden documents: the exact bytes for the shapes the owner can be sent. */
const golden: Record<string, { input: WatcherInfoInput; xml: string }> = {
  'no-watchers': {
    input: { resource, version: 0, state: 'full', watchers: [] },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="0" state="full">' +
      '<watcher-list resource="pres:alice@example.com" package="presence"></watcher-list></watcherinfo>\n',
  },
  'active-and-pending': {
    input: {
      resource,
      version: 7,
      state: 'full',
      watchers: [
        { id: bob, uri: `urn:uuid:${bob}`, displayName: 'Bob', status: 'active', event: 'approved', durationSubscribedSeconds: 3600, expiresSeconds: 1800 },
        { id: carol, uri: `urn:uuid:${carol}`, status: 'pending', event: 'subscribe' },
      ],
    },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="7" state="full">' +
      '<watcher-list resource="pres:alice@example.com" package="presence">' +
      '<watcher id="w-6f1c2a34-0b1d-4c5e-9f00-123456789abc" status="active" event="approved" display-name="Bob" duration-subscribed="3600" expiration="1800">urn:uuid:6f1c2a34-0b1d-4c5e-9f00-123456789abc</watcher>' +
      '<watcher id="w-b7e1d0c2-5a4f-4e3b-8c2d-0123456789ef" status="pending" event="subscribe">urn:uuid:b7e1d0c2-5a4f-4e3b-8c2d-0123456789ef</watcher>' +
      '</watcher-list></watcherinfo>\n',
  },
  'partial-terminated': {
    input: { resource, version: 8, state: 'partial', watchers: [{ id: carol, uri: `urn:uuid:${carol}`, status: 'terminated', event: 'rejected', durationSubscribedSeconds: 12 }] },
    xml:
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      '<watcherinfo xmlns="urn:ietf:params:xml:ns:watcherinfo" version="8" state="partial">' +
      '<watcher-list resource="pres:alice@example.com" package="presence">' +
      '<watcher id="w-b7e1d0c2-5a4f-4e3b-8c2d-0123456789ef" status="terminated" event="rejected" duration-subscribed="12">urn:uuid:b7e1d0c2-5a4f-4e3b-8c2d-0123456789ef</watcher>' +
      '</watcher-list></watcherinfo>\n',
  },
};

/** Display names a watcher chooses: markup, quotes, whitespace, non-ASCII, characters XML cannot carry. */
const awkwardNames = [
  `Bob "the <builder>" & O'Brien`,
  'tab\there\nnewline\r\nCRLF',
  'émilie 🙂 名前',
  ']]> <!-- --> <![CDATA[',
  'bell\u0007 nul\u0000 lone\uD800 surrogate \uFFFE',
  '',
];

t.test('media type', async (t) => {
  t.equal(WATCHERINFO_MEDIA_TYPE, 'application/watcherinfo+xml');
});

t.test('golden documents', async (t) => {
  for (const [name, { input, xml }] of Object.entries(golden)) t.equal(renderWatcherInfo(input), xml, name);
});

t.test('ids: a UUID becomes xs:ID-safe, anything else is kept (escaped)', async (t) => {
  t.equal(watcherElementId(bob), `w-${bob}`);
  t.equal(watcherElementId(bob.toUpperCase()), `w-${bob.toUpperCase()}`);
  t.equal(watcherElementId('w1'), 'w1');
  t.equal(watcherElementId(`w-${bob}`), `w-${bob}`, 'not prefixed twice');
  t.match(renderWatcherInfo({ resource, version: 0, state: 'full', watchers: [{ id: 'a&b', uri: 'sip:x@example.com', status: 'active', event: 'approved' }] }), /id="a&amp;b"/);
});

t.test('escaping of every text and attribute', async (t) => {
  const xml = renderWatcherInfo({
    resource: 'pres:a&b@example.com',
    version: 1,
    state: 'full',
    watchers: [{ id: bob, uri: 'sip:bob@example.com;transport=tcp?subject=a&b', displayName: awkwardNames[0], status: 'active', event: 'approved' }],
  });
  t.match(xml, /resource="pres:a&amp;b@example.com"/);
  t.match(xml, /display-name="Bob &quot;the &lt;builder&gt;&quot; &amp; O&apos;Brien"/);
  t.match(xml, />sip:bob@example.com;transport=tcp\?subject=a&amp;b<\/watcher>/);
  const ws = renderWatcherInfo({ resource, version: 1, state: 'full', watchers: [{ id: bob, uri: 'sip:b@x', displayName: awkwardNames[1], status: 'active', event: 'approved' }] });
  t.match(ws, /display-name="tab&#9;here&#10;newline&#13;&#10;CRLF"/, 'whitespace survives attribute-value normalization');
  const bad = renderWatcherInfo({ resource, version: 1, state: 'full', watchers: [{ id: bob, uri: 'sip:b@x', displayName: awkwardNames[4], status: 'active', event: 'approved' }] });
  t.match(bad, /display-name="bell nul lone surrogate "/, 'characters XML 1.0 cannot carry are dropped');
});

t.test('numbers: version must be a non-negative integer; seconds are whole and never negative', async (t) => {
  for (const version of [-1, 1.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    t.throws(() => renderWatcherInfo({ resource, version, state: 'full', watchers: [] }), RangeError, `version ${version}`);
  }
  const xml = renderWatcherInfo({ resource, version: 2, state: 'full', watchers: [{ id: 'w1', uri: 'sip:b@x', status: 'active', event: 'approved', durationSubscribedSeconds: 59.9, expiresSeconds: -3 }] });
  t.match(xml, /duration-subscribed="59" expiration="0"/);
  t.throws(() => renderWatcherInfo({ resource, version: 2, state: 'full', watchers: [{ id: 'w1', uri: 'sip:b@x', status: 'active', event: 'approved', expiresSeconds: Number.NaN }] }), RangeError);
});

t.test('every status/event pair and awkward display name passes the official schema (strict)', async (t) => {
  const documents: Record<string, string> = {};
  for (const status of statuses) {
    for (const event of events) {
      documents[`${status}-${event}`] = renderWatcherInfo({
        resource,
        version: 3,
        state: 'partial',
        watchers: [{ id: bob, uri: `urn:uuid:${bob}`, displayName: 'Bob', status, event, durationSubscribedSeconds: 10, expiresSeconds: 3600 }],
      });
    }
  }
  documents['all-pairs-one-list'] = renderWatcherInfo({
    resource,
    version: 4,
    state: 'full',
    watchers: statuses.flatMap((status, i) => events.map((event, j) => ({ id: `${bob.slice(0, -2)}${i}${j}`, uri: `urn:uuid:${bob}`, status, event }))),
  });
  awkwardNames.forEach((displayName, i) => {
    documents[`awkward-name-${i}`] = renderWatcherInfo({
      resource: 'pres:a&b@example.com',
      version: 5,
      state: 'full',
      watchers: [{ id: 'plain-id', uri: 'sip:bob@example.com;transport=tcp?subject=a&b', displayName, status: 'waiting', event: 'timeout', expiresSeconds: 0 }],
    });
  });
  for (const [name, { xml }] of Object.entries(golden)) documents[`golden-${name}`] = xml;
  const result = await validatePidf(documents, true);
  t.ok(result.ok, result.output);
  t.equal((result.output.match(/: OK/g) ?? []).length, Object.keys(documents).length, 'every document validated');
});

t.test('the validator is not a rubber stamp: attributes the schema lacks are refused', async (t) => {
  const good = golden['active-and-pending']!.xml;
  const result = await validatePidf({ 'bad-status': good.replace('status="active"', 'status="online"'), 'net-id': good.replace('status="active"', 'status="active" net-id="x"') }, true);
  t.notOk(result.ok, 'both refused');
  t.equal((result.output.match(/: FAIL/g) ?? []).length, 2, result.output);
});
