import t from 'tap';
import { parseSipServerUri, sipGatewayConfigSchema } from '../../api/sip/config.js';
import { StreamFramer } from '../../api/sip/framing.js';
import {
  buildRequest,
  headerParams,
  MAX_MESSAGE_BYTES,
  newBranch,
  parseMessage,
  parseResponse,
  sentByOf,
  SipBuildError,
  SipHeaders,
  splitHeaderList,
  topViaBranch,
  topViaSentBy,
  type SipParseErrorCode,
  type SipRequestSpec,
} from '../../api/sip/message.js';

const CRLF = '\r\n';
const msg = (lines: string[], body = ''): Buffer => Buffer.from(lines.join(CRLF) + CRLF + CRLF + body, 'utf8');
const okHeaders = ['Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKabc;rport=5060', 'From: <sip:a@x>;tag=1', 'To: <sip:a@x>;tag=2', 'Call-ID: c1', 'CSeq: 7 PUBLISH'];

const spec: SipRequestSpec = {
  method: 'PUBLISH',
  requestUri: 'sip:alice@example.com',
  from: { uri: 'sip:alice@example.com', tag: 'ft' },
  to: { uri: 'sip:alice@example.com' },
  callId: 'call-1',
  cseq: 3,
  event: 'presence',
  expires: 3600,
  sipIfMatch: 'a.1.2',
  contentType: 'application/pidf+xml',
  body: '<presence/>é',
  authorization: [{ header: 'Proxy-Authorization', value: 'Digest username="u"' }],
  userAgent: 'presence-service',
  contact: 'sip:alice@127.0.0.1:5062',
};

t.test('buildRequest writes every header RFC 3261 §8.1.1 and RFC 3903 §4 ask for', async (t) => {
  const text = buildRequest(spec, { transport: 'UDP', host: '127.0.0.1', port: 5062, branch: 'z9hG4bKxyz', rport: true }).toString('utf8');
  const [head = '', body] = text.split('\r\n\r\n');
  const lines = head.split('\r\n');
  t.equal(lines[0], 'PUBLISH sip:alice@example.com SIP/2.0');
  t.equal(lines[1], 'Via: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKxyz;rport');
  t.ok(lines.includes('Max-Forwards: 70'));
  t.ok(lines.includes('From: <sip:alice@example.com>;tag=ft'));
  t.ok(lines.includes('To: <sip:alice@example.com>'));
  t.ok(lines.includes('Call-ID: call-1'));
  t.ok(lines.includes('CSeq: 3 PUBLISH'));
  t.ok(lines.includes('Contact: <sip:alice@127.0.0.1:5062>'));
  t.ok(lines.includes('Event: presence'));
  t.ok(lines.includes('Expires: 3600'));
  t.ok(lines.includes('SIP-If-Match: a.1.2'));
  t.ok(lines.includes('Content-Type: application/pidf+xml'));
  t.ok(lines.includes('Proxy-Authorization: Digest username="u"'));
  t.ok(lines.includes('User-Agent: presence-service'));
  t.ok(lines.includes(`Content-Length: ${Buffer.byteLength('<presence/>é')}`), 'Content-Length counts bytes, not characters');
  t.equal(body, '<presence/>é');
  const tcp = buildRequest({ ...spec, body: undefined, sipIfMatch: undefined }, { transport: 'TCP', host: '::1', port: 5, branch: 'z9hG4bK1', rport: false }).toString();
  t.match(tcp, /^Via: SIP\/2\.0\/TCP \[::1\]:5;branch=z9hG4bK1\r$/m, 'no rport over TCP; IPv6 sent-by bracketed');
  t.match(tcp, /Content-Length: 0\r\n\r\n$/);
  t.notMatch(tcp, /Content-Type|SIP-If-Match/);
});

t.test('buildRequest refuses header injection and malformed input', async (t) => {
  const via = { transport: 'UDP' as const, host: '127.0.0.1', port: 1, branch: 'z9hG4bK1', rport: true };
  t.throws(() => buildRequest({ ...spec, sipIfMatch: 'x\r\nEvil: 1' }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, callId: 'a\nb' }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, to: { uri: 'sip:a@b> ;x' } }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, requestUri: 'sip:a b' }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, method: 'PUB LISH' }, via), SipBuildError);
  t.throws(() => buildRequest(spec, { ...via, branch: 'nocookie' }), SipBuildError, 'RFC 3261 §8.1.1.7 magic cookie');
  t.throws(() => buildRequest({ ...spec, contentType: undefined }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, body: 'x'.repeat(MAX_MESSAGE_BYTES) }, via), SipBuildError);
  t.throws(() => buildRequest({ ...spec, cseq: 2 ** 31 }, via), SipBuildError);
  t.match(newBranch(), /^z9hG4bK[0-9a-f]{32}$/);
});

t.test('parseResponse reads status line, headers, compact forms, folding and body', async (t) => {
  const data = msg(
    [
      'SIP/2.0 200 OK',
      'v: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKtop;rport=5060, SIP/2.0/UDP 10.0.0.1;branch=z9hG4bKsecond',
      'Via: SIP/2.0/UDP 10.0.0.2;branch=z9hG4bKthird',
      'f: <sip:a@x>;tag=1',
      't: <sip:a@x>;tag=2',
      'i: call-1',
      'CSEQ: 7 PUBLISH',
      'sip-etag: a.1.1',
      'Expires:',
      ' 3600',
      'o: presence',
      'c: text/plain',
      'l: 5',
    ],
    'hello-and-more',
  );
  const r = parseResponse(data);
  t.ok(r.ok);
  if (!r.ok) return;
  const res = r.value;
  t.equal(res.status, 200);
  t.equal(res.reason, 'OK');
  t.equal(res.headers.get('Call-ID'), 'call-1', 'i = Call-ID');
  t.equal(res.headers.get('event'), 'presence', 'o = Event (RFC 3265 §7.2)');
  t.equal(res.headers.get('Content-Type'), 'text/plain');
  t.equal(res.headers.get('SIP-ETag'), 'a.1.1', 'names are case-insensitive');
  t.equal(res.headers.get('expires'), '3600', 'folded line joined');
  t.equal(res.headers.getAll('via').length, 2, 'v and Via are one field name');
  t.equal(topViaBranch(res.headers), 'z9hG4bKtop');
  t.equal(res.body.toString(), 'hello', 'UDP: bytes past Content-Length dropped (RFC 3261 §18.3)');
  t.same(splitHeaderList('a, "b, c" <sip:x,y>, d'), ['a', '"b, c" <sip:x,y>', 'd']);
  t.same(Object.fromEntries(headerParams('<sip:a@x;lr>;tag=1;expires="5"')), { tag: '1', expires: '5' });

  const noLength = parseResponse(msg(['SIP/2.0 486 Busy Here', ...okHeaders], 'rest'));
  t.ok(noLength.ok && noLength.value.body.toString() === 'rest', 'UDP without Content-Length: the rest of the datagram');
  const utf8 = parseResponse(msg(['SIP/2.0 603 Décliné', ...okHeaders, 'Content-Length: 0']));
  t.ok(utf8.ok && utf8.value.reason === 'Décliné', 'UTF-8 reason phrase');
  const leadingCrlf = parseResponse(Buffer.concat([Buffer.from('\r\n\r\n'), msg(['SIP/2.0 100 Trying', ...okHeaders, 'Content-Length: 0'])]));
  t.ok(leadingCrlf.ok, 'leading CRLFs skipped (RFC 3261 §7.5)');
  const request = parseMessage(msg(['NOTIFY sip:w@x SIP/2.0', ...okHeaders, 'Content-Length: 0']));
  t.ok(request.ok && request.value.kind === 'request' && request.value.method === 'NOTIFY');
});

t.test('hostile or malformed responses become typed errors, never throws', async (t) => {
  const cases: [string, Buffer, SipParseErrorCode][] = [
    ['huge message', Buffer.alloc(MAX_MESSAGE_BYTES + 1, 'a'), 'too-large'],
    ['huge header', msg(['SIP/2.0 200 OK', ...okHeaders, `X-Big: ${'a'.repeat(MAX_MESSAGE_BYTES)}`]), 'too-large'],
    ['no blank line', Buffer.from('SIP/2.0 200 OK\r\nVia: x\r\n'), 'no-header-end'],
    ['non-numeric status', msg(['SIP/2.0 2OO OK', ...okHeaders]), 'bad-status-code'],
    ['status out of range', msg(['SIP/2.0 999 Nope', ...okHeaders]), 'bad-status-code'],
    ['four-digit status', msg(['SIP/2.0 2000 OK', ...okHeaders]), 'bad-status-code'],
    ['wrong version', msg(['SIP/3.0 200 OK', ...okHeaders]), 'bad-start-line'],
    ['garbage start line', msg(['HELLO', ...okHeaders]), 'bad-start-line'],
    ['binary junk', msg(['\u0000\u0001\u0002']), 'bad-start-line'],
    ['header without colon', msg(['SIP/2.0 200 OK', ...okHeaders, 'Broken header']), 'bad-header'],
    ['header name with space', msg(['SIP/2.0 200 OK', ...okHeaders, 'Bad Name: x']), 'bad-header'],
    ['fold before any header', msg(['SIP/2.0 200 OK', ' folded', ...okHeaders]), 'bad-header'],
    ['too many headers', msg(['SIP/2.0 200 OK', ...okHeaders, ...Array.from({ length: 300 }, (_, i) => `X-${i}: y`)]), 'too-many-headers'],
    ['negative content-length', msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: -1']), 'bad-content-length'],
    ['non-numeric content-length', msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: ten']), 'bad-content-length'],
    ['absurd content-length', msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: 99999999999999']), 'bad-content-length'],
    ['two content-lengths', msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: 0', 'l: 4'], 'body'), 'bad-header'],
    ['content-length beyond the data', msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: 50'], 'short'), 'truncated-body'],
    ['missing CSeq', msg(['SIP/2.0 200 OK', ...okHeaders.filter((h) => !h.startsWith('CSeq'))]), 'missing-header'],
    ['missing Via', msg(['SIP/2.0 200 OK', ...okHeaders.filter((h) => !h.startsWith('Via'))]), 'missing-header'],
    ['malformed CSeq', msg(['SIP/2.0 200 OK', ...okHeaders.filter((h) => !h.startsWith('CSeq')), 'CSeq: PUBLISH 7']), 'bad-header'],
    ['empty', Buffer.alloc(0), 'no-header-end'],
    // RFC 3261 §25.1: no control characters in header fields; a bare CR would end a line for one reader and not another.
    ['bare CR in a challenge', msg(['SIP/2.0 401 Unauthorized', ...okHeaders, 'WWW-Authenticate: Digest realm="r", nonce="a\rb", qop="auth"']), 'bad-header'],
    ['NUL in an entity tag', msg(['SIP/2.0 200 OK', ...okHeaders, 'SIP-ETag: e1\u0000', 'Expires: 60']), 'bad-header'],
    ['bare CR hiding a compact Content-Length', msg(['SIP/2.0 200 OK', ...okHeaders, 'X: a\rl: 99']), 'bad-header'],
    ['DEL in a value', msg(['SIP/2.0 200 OK', ...okHeaders, 'X: a\u007fb']), 'bad-header'],
  ];
  for (const [name, data, code] of cases) {
    let result: ReturnType<typeof parseResponse> | undefined;
    t.doesNotThrow(() => {
      result = parseResponse(data);
    }, name);
    t.equal(result?.ok, false, name);
    if (result && !result.ok) t.equal(result.error.code, code, `${name}: ${result.error.message.slice(0, 60)}`);
  }
  const req = parseResponse(msg(['OPTIONS sip:x SIP/2.0', ...okHeaders, 'Content-Length: 0']));
  t.ok(!req.ok && req.error.code === 'bad-start-line', 'a request where a response is expected');
});

t.test('StreamFramer frames by Content-Length across chunk boundaries', async (t) => {
  const one = msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: 3'], 'abc');
  const two = msg(['SIP/2.0 202 Accepted', ...okHeaders, 'l: 0']);
  const stream = Buffer.concat([Buffer.from('\r\n\r\n'), one, two]);
  const framer = new StreamFramer();
  const seen: number[] = [];
  for (let i = 0; i < stream.length; i += 7) {
    for (const r of framer.push(stream.subarray(i, i + 7))) if (r.ok && r.value.kind === 'response') seen.push(r.value.status);
  }
  t.same(seen, [200, 202]);

  const noLength = new StreamFramer().push(msg(['SIP/2.0 200 OK', ...okHeaders]));
  t.ok(noLength[0] && !noLength[0].ok && noLength[0].error.code === 'bad-content-length', 'Content-Length is mandatory on a stream');
  const hostile = new StreamFramer();
  const out = hostile.push(Buffer.alloc(MAX_MESSAGE_BYTES + 10, 'a'));
  t.ok(out[0] && !out[0].ok && out[0].error.code === 'too-large', 'endless header section is cut off');
  t.ok(hostile.broken, 'and the stream is marked broken');
  t.same(hostile.push(one), [], 'nothing more is parsed from a broken stream');
  const huge = new StreamFramer().push(msg(['SIP/2.0 200 OK', ...okHeaders, 'Content-Length: 9000000']));
  t.ok(huge[0] && !huge[0].ok && huge[0].error.code === 'too-large', 'announced body beyond the bound');
  // A bare CR starts a line for a multiline search and not for parseMessage: the framer would take 'l: 99' as the length of a body parseMessage never sees.
  const smuggler = new StreamFramer();
  const framed = smuggler.push(Buffer.concat([msg(['SIP/2.0 200 OK', ...okHeaders, 'X: a\rl: 99', 'Content-Length: 0']), one]));
  t.ok(framed[0] && !framed[0].ok && framed[0].error.code === 'bad-header', 'a head with a bare CR breaks the stream');
  t.equal(framed.length, 1);
  t.ok(smuggler.broken, 'and the connection is dropped');
  const tabs = new StreamFramer().push(msg(['SIP/2.0 200 OK', ...okHeaders, 'X:\ta\tb', 'Content-Length: 0']));
  t.ok(tabs[0]?.ok, 'horizontal tabs are white space, not control characters to refuse');
});

t.test('server URI and configuration', async (t) => {
  t.same(parseSipServerUri('sip:127.0.0.1:5070;transport=tcp'), { host: '127.0.0.1', port: 5070, transport: 'tcp' });
  t.same(parseSipServerUri('sip:pres.example.com'), { host: 'pres.example.com', port: 5060, transport: 'udp' });
  t.same(parseSipServerUri('sip:[::1]:5070;lr;transport=UDP'), { host: '::1', port: 5070, transport: 'udp' });
  // TLS (RFC 3261 §26.2, RFC 5630 §3.1.3): sips: or ;transport=tls, default port 5061.
  t.same(parseSipServerUri('sips:pres.example.com'), { host: 'pres.example.com', port: 5061, transport: 'tls' });
  t.same(parseSipServerUri('sips:pres.example.com:5071;transport=tcp'), { host: 'pres.example.com', port: 5071, transport: 'tls' });
  t.same(parseSipServerUri('SIPS:pres.example.com;transport=TLS'), { host: 'pres.example.com', port: 5061, transport: 'tls' });
  t.same(parseSipServerUri('sip:127.0.0.1;transport=tls'), { host: '127.0.0.1', port: 5061, transport: 'tls' });
  t.same(parseSipServerUri('sip:127.0.0.1;transport=tcp'), { host: '127.0.0.1', port: 5060, transport: 'tcp' });
  for (const bad of ['sips:x;transport=udp', 'sip:x:99999', 'sip:x;transport=sctp', 'http://x', 'sip:', 'sips:', 'sip:a b']) t.ok('error' in parseSipServerUri(bad), bad);

  const ok = sipGatewayConfigSchema.safeParse({ server: 'sip:127.0.0.1:5070;transport=tcp', domain: 'example.com' });
  t.ok(ok.success);
  if (ok.success) {
    t.same(ok.data.server, { host: '127.0.0.1', port: 5070, transport: 'tcp' });
    t.equal(ok.data.expires, 3600);
    t.equal(ok.data.localHost, '127.0.0.1');
    t.equal(ok.data.localPort, 0);
  }
  const bad = sipGatewayConfigSchema.safeParse({ server: 'sips:x;transport=udp', domain: 'bad domain', expires: 30, username: 'u', fromUri: 'sip:a\r\nb' });
  t.notOk(bad.success);
  if (!bad.success) {
    const paths = bad.error.issues.map((i) => i.path.join('.'));
    for (const p of ['server', 'domain', 'expires', 'fromUri']) t.ok(paths.includes(p), `reports ${p}`);
  }
  const half = sipGatewayConfigSchema.safeParse({ server: 'sip:h', domain: 'd', username: 'u' });
  t.notOk(half.success, 'username without password');
  t.notOk(sipGatewayConfigSchema.safeParse({ server: 'sip:h', domain: 'd', expires: 86_401 }).success);
  t.notOk(sipGatewayConfigSchema.safeParse({ server: 'sip:h;transport=tcp', domain: 'd', tls: { ca: 'x' } }).success, 'TLS material needs a TLS server');
  t.ok(sipGatewayConfigSchema.safeParse({ server: 'sips:h', domain: 'd', tls: { ca: 'x' } }).success);
});

t.test('the top Via sent-by, as compared with what was sent (RFC 3261 §18.1.2)', async (t) => {
  const sentBy = (...vias: string[]) => {
    const headers = new SipHeaders();
    for (const via of vias) headers.add('Via', via);
    return topViaSentBy(headers);
  };
  const cases: [string[], string | undefined][] = [
    [['SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKa;rport=5070;received=127.0.0.1'], '127.0.0.1:5070'],
    [['SIP/2.0/UDP Host.Example.COM;branch=z9hG4bKa'], 'host.example.com:5060'],
    [['SIP/2.0/TLS host.example.com;branch=z9hG4bKa'], 'host.example.com:5061'],
    [['SIP / 2.0 / TCP  10.0.0.1 : 5080 ;branch=z9hG4bKa'], '10.0.0.1:5080'],
    [['SIP/2.0/UDP [2001:DB8::1]:5060;branch=z9hG4bKa'], '[2001:db8::1]:5060'],
    [['SIP/2.0/UDP [fe80::1%eth0]:5060;branch=z9hG4bKa'], '[fe80::1%eth0]:5060'],
    [['SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa, SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bKb'], '10.0.0.1:5060'],
    [['SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKa', 'SIP/2.0/UDP 10.0.0.2:5060'], '10.0.0.9:5060'],
    [[], undefined],
    [['SIP/2.0/UDP'], undefined],
    [['SIP/3.0/UDP 10.0.0.1:5060'], undefined],
    [['SIP/2.0/UDP 10.0.0.1:port'], undefined],
    [['SIP/2.0/UDP a b:5060'], undefined],
  ];
  for (const [vias, expected] of cases) t.equal(sentBy(...vias), expected, vias.join(' | ') || '(none)');
  t.equal(sentByOf('127.0.0.1', 5070), '127.0.0.1:5070');
  t.equal(sentByOf('2001:DB8::1', 5060), '[2001:db8::1]:5060', 'an IPv6 host in brackets, as the Via carries it');
  t.equal(sentByOf('fe80::1%eth0', 5060), '[fe80::1%eth0]:5060', 'with its zone');
  // What buildRequest writes, read back, is what sentByOf gives.
  const request = parseMessage(buildRequest(spec, { transport: 'UDP', host: '::1', port: 5099, branch: newBranch(), rport: true }));
  t.ok(request.ok);
  if (request.ok) t.equal(topViaSentBy(request.value.headers), sentByOf('::1', 5099));
});
