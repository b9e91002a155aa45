import { lookup as dnsLookup, type LookupAddress, type LookupAllOptions, type LookupOneOptions } from 'node:dns';
import http from 'node:http';
import https from 'node:https';
import type { LookupFunction } from 'node:net';
import type { Network } from '../core/networks.js';
import { inNetworks, isInternalAddress } from './internal-address.js';

/**
 * The one way a webhook POST leaves the service. Registration refuses URLs
 * whose host is an internal address literal (api/routes/webhooks.ts), but a
 * host name can resolve anywhere, and resolve differently later (DNS
 * rebinding: public when registered or first checked, 169.254.169.254 when
 * used). So the check runs here, inside the connection's own name lookup:
 * the addresses it approves are the ones the socket connects to, and a name
 * with any internal address among its answers is refused whole (with several
 * answers, the connection may try any of them). Nothing else resolves the
 * name in between, so there is no window to rebind in.
 *
 * Kept-alive connections are reused only for the host (and port) they were
 * made for, and were checked when they were made. An IP literal in a URL
 * is not looked up at all: that is why registration checks literals.
 * Redirects are not followed (a 3xx is the receiver's answer).
 */

/** The status of the answer; 0 for a network error or a timeout; REFUSED_ADDRESS when the name resolved to an internal or refused address. */
export type WebhookPost = (url: string, body: string, headers: Readonly<Record<string, string>>, timeoutMs: number) => Promise<number>;

export const REFUSED_ADDRESS = -1;
const REFUSED_CODE = 'ERR_WEBHOOK_INTERNAL_ADDRESS';

type Resolver = (hostname: string, options: LookupAllOptions, callback: (error: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

const systemResolver: Resolver = (hostname, options, callback) => dnsLookup(hostname, options, callback);

/**
 * A `lookup` for net.connect that resolves every address of the name and
 * refuses them all if one is `refused`; it answers in the form it was
 * asked for (one address, or all of them for Happy Eyeballs).
 */
export function resolvingLookup(resolve: Resolver, refused: (address: string) => boolean): LookupFunction {
  return (hostname: string, options: LookupOneOptions | LookupAllOptions, callback: (...args: never[]) => void) => {
    const answer = callback as unknown as (error: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
    resolve(hostname, { ...options, all: true }, (error, addresses) => {
      if (error) return answer(error, []);
      const [first] = addresses;
      if (!first) return answer(Object.assign(new Error(`no address for ${hostname}`), { code: 'ENOTFOUND' }), []);
      if (addresses.some((a) => refused(a.address))) {
        return answer(Object.assign(new Error(`webhook host ${hostname} resolves to a refused address`), { code: REFUSED_CODE }), []);
      }
      if (options.all) return answer(null, addresses);
      answer(null, first.address, first.family);
    });
  };
}

/**
 * `refuseInternal`: in production (WEBHOOK_ALLOW_HTTP off) names resolving
 * to internal addresses are refused; outside it, local receivers are
 * allowed (tests, development), as for literals at registration.
 * `refuseNetworks` (WEBHOOK_REFUSE_NETWORKS) are refused always.
 * `resolve` replaces the system resolver (tests).
 */
export function createWebhookPost(options: { refuseInternal: boolean; refuseNetworks?: readonly Network[]; resolve?: Resolver }): WebhookPost {
  const configured = inNetworks(options.refuseNetworks ?? []);
  const refused = (address: string) => (options.refuseInternal && isInternalAddress(address)) || configured(address);
  const checks = options.refuseInternal || (options.refuseNetworks?.length ?? 0) > 0;
  const lookup = checks || options.resolve ? resolvingLookup(options.resolve ?? systemResolver, refused) : undefined;
  // Agents of our own: their pooled connections were all made through `lookup`.
  const transports: Readonly<Record<string, { readonly agent: http.Agent; readonly request: typeof http.request }>> = {
    'http:': { agent: new http.Agent({ keepAlive: true }), request: http.request },
    'https:': { agent: new https.Agent({ keepAlive: true }), request: https.request },
  };
  return (url, body, headers, timeoutMs) =>
    new Promise<number>((settle) => {
      let target: URL;
      try {
        target = new URL(url);
      } catch {
        return settle(0);
      }
      const transport = Object.hasOwn(transports, target.protocol) ? transports[target.protocol] : undefined;
      if (!transport) return settle(0);
      try {
        const request = transport.request(target, {
          method: 'POST',
          agent: transport.agent,
          headers: { ...headers, 'content-length': String(Buffer.byteLength(body)) },
          signal: AbortSignal.timeout(timeoutMs),
          ...(lookup ? { lookup } : {}),
        });
        request.on('response', (response) => {
          // Only the status matters; the body is discarded as it arrives (a
          // body cut off later by the timeout is no error of the delivery).
          response.resume();
          settle(response.statusCode ?? 0);
        });
        request.on('error', (error: NodeJS.ErrnoException) => settle(error.code === REFUSED_CODE ? REFUSED_ADDRESS : 0));
        request.end(body);
      } catch {
        // Refused synchronously (a header value node:http will not send): a failure like any other.
        settle(0);
      }
    });
}
