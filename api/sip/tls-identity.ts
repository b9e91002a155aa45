import { isIP } from 'node:net';
import { checkServerIdentity, type PeerCertificate } from 'node:tls';

/**
 * Whether the SIP server's certificate names the host of the configured
 * server URI, as RFC 5922 (which updates RFC 3261 on this point) says:
 *
 * - §7.1: the identities are the subjectAltName entries of type URI with a
 *   sip: or sips: scheme (their host part) and of type dNSName; only when
 *   the certificate has neither is the subject's Common Name used;
 * - §7.2: compared case-insensitively and exactly, with no wildcard
 *   matching ("*.example.com" names no SIP domain);
 * - an IP-literal server URI (outside RFC 5922) must appear as an
 *   iPAddress subjectAltName (Node's own check, RFC 6125 style).
 *
 * Returns an Error for tls.connect's checkServerIdentity, undefined when it
 * matches. The chain itself is verified by tls.connect (rejectUnauthorized).
 */
export function checkSipServerIdentity(host: string, cert: PeerCertificate): Error | undefined {
  const bare = host.replace(/^\[(.*)\]$/, '$1');
  if (isIP(bare) !== 0) return checkServerIdentity(bare, cert);
  const wanted = bare.toLowerCase().replace(/\.$/, '');
  const { uris, dnsNames } = subjectAltNames(cert.subjectaltname ?? '');
  const sipDomains = uris.map((uri) => /^sips?:(?:[^@]*@)?([^:;?>]+)/i.exec(uri)?.[1]).filter((d): d is string => d !== undefined);
  const identities = sipDomains.length + dnsNames.length > 0 ? [...sipDomains, ...dnsNames] : [commonName(cert)].filter((cn): cn is string => cn !== undefined);
  if (identities.some((identity) => identity.toLowerCase().replace(/\.$/, '') === wanted)) return undefined;
  const error = new Error(`the SIP server's certificate does not name ${host} (it names ${identities.join(', ') || 'nothing'}; RFC 5922 §7)`) as Error & { code: string };
  error.code = 'ERR_TLS_CERT_ALTNAME_INVALID';
  return error;
}

/** Node's subjectaltname string: "DNS:a, URI:sip:b, IP Address:1.2.3.4"; values with a comma come JSON-quoted. */
function subjectAltNames(text: string): { uris: string[]; dnsNames: string[] } {
  const uris: string[] = [];
  const dnsNames: string[] = [];
  const entry = /(DNS|URI|IP Address|email|othername|DirName|Registered ID):("(?:[^"\\]|\\.)*"|[^,]*)(?:,\s*|$)/g;
  for (let match = entry.exec(text); match && match[0] !== ''; match = entry.exec(text)) {
    const [, type, raw = ''] = match;
    const value = raw.startsWith('"') ? (JSON.parse(raw) as string) : raw;
    if (type === 'URI') uris.push(value);
    else if (type === 'DNS') dnsNames.push(value);
  }
  return { uris, dnsNames };
}

function commonName(cert: PeerCertificate): string | undefined {
  const cn: unknown = cert.subject?.CN;
  return typeof cn === 'string' ? cn : Array.isArray(cn) && typeof cn[cn.length - 1] === 'string' ? (cn[cn.length - 1] as string) : undefined;
}
