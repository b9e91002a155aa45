import { createHash } from 'node:crypto';
import t from 'tap';
import { DigestAuthenticator } from '../../api/sip/credentials.js';
import { buildAuthorization, chooseChallenge, computeDigest, parseChallenges, parseCredentials, verifyCredentials, type DigestChallenge } from '../../api/sip/digest.js';
import { parseResponse } from '../../api/sip/message.js';

// RFC 7616 §3.9.1: the same request answered with SHA-256 and with MD5.
const RFC7616 = {
  username: 'Mufasa',
  password: 'Circle of Life',
  method: 'GET',
  uri: '/dir/index.html',
  realm: 'http-auth@example.org',
  nonce: '7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v',
  opaque: 'FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS',
  cnonce: 'f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ',
  nc: 1,
};
const header = (algorithm: string): string =>
  `Digest realm="${RFC7616.realm}", qop="auth, auth-int", algorithm=${algorithm}, nonce="${RFC7616.nonce}", opaque="${RFC7616.opaque}"`;

t.test('RFC 7616 §3.9.1 example reproduces exactly (SHA-256 and MD5)', async (t) => {
  const challenges = parseChallenges([header('SHA-256'), header('MD5')]);
  t.equal(challenges.length, 2);
  const [sha, md5] = challenges as [DigestChallenge, DigestChallenge];
  t.same(sha.qop, ['auth', 'auth-int']);
  t.equal(sha.opaque, RFC7616.opaque);
  const input = { username: RFC7616.username, password: RFC7616.password, method: RFC7616.method, uri: RFC7616.uri, cnonce: RFC7616.cnonce, nc: RFC7616.nc };
  t.equal(computeDigest({ ...input, challenge: sha }).response, '753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1');
  t.equal(computeDigest({ ...input, challenge: md5 }).response, '8ca523f5e9506fed4657c9700eebdbec');
  const value = buildAuthorization({ ...input, challenge: sha });
  t.match(value, /^Digest username="Mufasa", realm="http-auth@example.org", nonce="7ypf\/xlj9XXwfDPEoM4URrv\/xwf94BcCAzFZH4GiTo0v", uri="\/dir\/index.html", response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", algorithm=SHA-256/);
  t.match(value, /qop=auth, nc=00000001/, 'qop and nc as tokens (RFC 3261 §25.1)');
  t.match(value, /opaque="FQhe\/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"/);
  const parsed = parseCredentials(value);
  t.ok(parsed && verifyCredentials(parsed, RFC7616.password, 'GET'), 'the verifier agrees');
  t.ok(parsed && !verifyCredentials(parsed, 'wrong', 'GET'));
});

t.test('other forms: RFC 2069 (no qop), -sess, auth-int', async (t) => {
  const h = (s: string): string => createHash('md5').update(s).digest('hex');
  const plain: DigestChallenge = { realm: 'r', nonce: 'n', algorithm: 'MD5', qop: [], stale: false };
  const ha1 = h('u:r:p');
  const ha2 = h('PUBLISH:sip:a@b');
  const noQop = computeDigest({ challenge: plain, username: 'u', password: 'p', method: 'PUBLISH', uri: 'sip:a@b' });
  t.equal(noQop.response, h(`${ha1}:n:${ha2}`), 'RFC 2069 / RFC 3261 §22.4 form');
  t.equal(noQop.nc, undefined);
  t.notMatch(buildAuthorization({ challenge: plain, username: 'u', password: 'p', method: 'PUBLISH', uri: 'sip:a@b' }), /qop|nc=|cnonce/);

  const sess = computeDigest({ challenge: { ...plain, algorithm: 'MD5-sess', qop: ['auth'] }, username: 'u', password: 'p', method: 'PUBLISH', uri: 'sip:a@b', cnonce: 'c', nc: 2 });
  t.equal(sess.response, h(`${h(`${ha1}:n:c`)}:n:00000002:c:auth:${ha2}`), 'MD5-sess HA1 (RFC 7616 §3.4.2)');

  const body = '<presence/>';
  const authInt = computeDigest({ challenge: { ...plain, qop: ['auth-int'] }, username: 'u', password: 'p', method: 'PUBLISH', uri: 'sip:a@b', cnonce: 'c', body });
  t.equal(authInt.qop, 'auth-int');
  t.equal(authInt.response, h(`${ha1}:n:00000001:c:auth-int:${h(`PUBLISH:sip:a@b:${h(body)}`)}`), 'auth-int hashes the body (RFC 7616 §3.4.3)');
  const cred = parseCredentials(buildAuthorization({ challenge: { ...plain, algorithm: 'SHA-256-sess', qop: ['auth-int'] }, username: 'u', password: 'p', method: 'PUBLISH', uri: 'sip:a@b', body }));
  t.ok(cred && verifyCredentials(cred, 'p', 'PUBLISH', body), 'SHA-256-sess + auth-int round trip');
  t.ok(cred && !verifyCredentials(cred, 'p', 'PUBLISH', `${body} `), 'a changed body fails auth-int');
});

t.test('challenge parsing and choice', async (t) => {
  t.equal(chooseChallenge(parseChallenges([header('MD5'), header('SHA-256')]))?.algorithm, 'SHA-256', 'SHA-256 preferred over MD5');
  t.equal(chooseChallenge(parseChallenges([`${header('MD5')}, ${header('SHA-256-sess')}`]))?.algorithm, 'SHA-256-sess', 'two challenges in one field');
  const kam = parseChallenges(['Digest realm="example.com", nonce="awZQ52sGT7t3OHCbYlVNbytRed7X33JH", qop="auth"']);
  t.same(kam, [{ realm: 'example.com', nonce: 'awZQ52sGT7t3OHCbYlVNbytRed7X33JH', algorithm: 'MD5', qop: ['auth'], stale: false }], 'Kamailio 5.6 challenge: no algorithm means MD5');
  t.equal(parseChallenges(['Digest realm="r", nonce="n", stale=TRUE'])[0]?.stale, true);
  t.equal(parseChallenges(['Digest realm="a \\"quoted\\", realm", nonce="n"'])[0]?.realm, 'a "quoted", realm');
  const dropped = [
    'Basic realm="r"',
    'Digest realm="r", nonce="n", algorithm=SHA-512-256',
    'Digest realm="r"',
    'Digest nonce="n"',
    'Digest realm="r", nonce="n", qop="auth-conf"',
    'Digest realm="unterminated, nonce="n"',
    '',
    '===',
    '"',
  ];
  for (const v of dropped) t.same(parseChallenges([v]), [], `dropped: ${v}`);
  t.equal(parseCredentials('Basic abc'), undefined);
  t.equal(parseCredentials('Digest username="u", realm="r"'), undefined);
  t.equal(parseCredentials('Digest username="u", realm="r", nonce="n", uri="x", response="y", nc=zz'), undefined);
});

t.test('DigestAuthenticator answers once per nonce, retries on stale, caches for later requests', async (t) => {
  const res = (status: number, value: string): ReturnType<typeof parseResponse> =>
    parseResponse(
      Buffer.from(
        `SIP/2.0 ${status} Auth\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\n${status === 407 ? 'Proxy' : 'WWW'}-Authenticate: ${value}\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
  const none = new DigestAuthenticator(undefined);
  const r401 = res(401, 'Digest realm="r", nonce="n1", qop="auth"');
  if (!r401.ok) throw r401.error;
  t.same(none.onChallenge(r401.value, none.authorize('PUBLISH', 'sip:a@b')), { retry: false, reason: '401: the server demands credentials and none are configured' });

  const auth = new DigestAuthenticator({ username: 'u', password: 'p' });
  const first = auth.authorize('PUBLISH', 'sip:a@b');
  t.same(first.headers, [], 'nothing before the first challenge');
  t.equal(auth.onChallenge(r401.value, first).retry, true);
  const second = auth.authorize('PUBLISH', 'sip:a@b', '<x/>');
  t.equal(second.headers[0]?.header, 'Authorization');
  t.match(second.headers[0]?.value ?? '', /nc=00000001/);
  t.match(auth.authorize('PUBLISH', 'sip:a@b').headers[0]?.value ?? '', /nc=00000002/, 'cached challenge reused with an incremented nonce count');
  t.equal(auth.onChallenge(r401.value, second).retry, false, 'same nonce refused again: wrong credentials, give up');

  const stale = res(407, 'Digest realm="r", nonce="n1", stale=true, algorithm=SHA-256');
  if (!stale.ok) throw stale.error;
  const v = auth.onChallenge(stale.value, second);
  t.equal(v.retry, true, 'stale=true: retry even with the same nonce');
  t.equal(auth.authorize('PUBLISH', 'sip:a@b').headers[0]?.header, 'Proxy-Authorization', '407 is answered in Proxy-Authorization');
  const junk = res(401, 'Basic realm="x"');
  if (!junk.ok) throw junk.error;
  t.equal(auth.onChallenge(junk.value, second).retry, false, 'no usable Digest challenge');
});

t.test('the same nonce challenged again for another request keeps counting (RFC 7616 §3.4: no nonce count is used twice)', async (t) => {
  const challenge = (nonce: string, extra = '') => {
    const parsed = parseResponse(
      Buffer.from(
        `SIP/2.0 401 Auth\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nWWW-Authenticate: Digest realm="r", nonce="${nonce}"${extra}, qop="auth"\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
    if (!parsed.ok) throw parsed.error;
    return parsed.value;
  };
  const auth = new DigestAuthenticator({ username: 'u', password: 'p' });
  // Two publications sent before any challenge; both are challenged with the same nonce.
  const alice = auth.authorize('PUBLISH', 'sip:alice@b');
  const bob = auth.authorize('PUBLISH', 'sip:bob@b');
  t.equal(auth.onChallenge(challenge('n7'), alice).retry, true);
  t.match(auth.authorize('PUBLISH', 'sip:alice@b').headers[0]?.value ?? '', /nc=00000001/);
  t.equal(auth.onChallenge(challenge('n7'), bob).retry, true, "bob's request carried no credentials: answered");
  t.match(auth.authorize('PUBLISH', 'sip:bob@b').headers[0]?.value ?? '', /nc=00000002/, 'not 00000001 again');
  t.equal(auth.onChallenge(challenge('n8', ', stale=true'), auth.authorize('PUBLISH', 'sip:alice@b')).retry, true);
  t.match(auth.authorize('PUBLISH', 'sip:alice@b').headers[0]?.value ?? '', /nc=00000001/, 'a new nonce starts at 1');
});

t.test('after credentials were refused, the same nonce challenged again does not count from 1 again (RFC 7616 §3.4)', async (t) => {
  const challenge = (nonce: string) => {
    const parsed = parseResponse(
      Buffer.from(
        `SIP/2.0 401 Auth\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: c\r\nCSeq: 1 PUBLISH\r\nWWW-Authenticate: Digest realm="r", nonce="${nonce}", qop="auth"\r\nContent-Length: 0\r\n\r\n`,
      ),
    );
    if (!parsed.ok) throw parsed.error;
    return parsed.value;
  };
  const auth = new DigestAuthenticator({ username: 'u', password: 'p' });
  t.equal(auth.onChallenge(challenge('n1'), auth.authorize('PUBLISH', 'sip:a@b')).retry, true);
  const answered = auth.authorize('PUBLISH', 'sip:a@b');
  t.match(answered.headers[0]?.value ?? '', /nc=00000001/);
  t.match(auth.onChallenge(challenge('n1'), answered), { retry: false, reason: /credentials refused/ }, 'refused: the cached challenge is dropped');
  t.same(auth.authorize('PUBLISH', 'sip:a@b').headers, [], 'the next request goes without credentials');
  t.equal(auth.onChallenge(challenge('n1'), { headers: [], nonces: new Set() }).retry, true, 'and is challenged with the same nonce');
  t.match(auth.authorize('PUBLISH', 'sip:a@b').headers[0]?.value ?? '', /nc=00000002/, 'its count goes on from where it stopped');
  auth.reset();
  t.equal(auth.onChallenge(challenge('n1'), { headers: [], nonces: new Set() }).retry, true);
  t.match(auth.authorize('PUBLISH', 'sip:a@b').headers[0]?.value ?? '', /nc=00000003/, 'reset() keeps the count too');
  t.equal(auth.onChallenge(challenge('n2'), { headers: [], nonces: new Set() }).retry, true);
  t.match(auth.authorize('PUBLISH', 'sip:a@b').headers[0]?.value ?? '', /nc=00000001/, 'another nonce starts at 1');
});
