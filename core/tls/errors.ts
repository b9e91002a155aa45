/**
 * Turns a TLS handshake failure into a sentence an operator can act on,
 * naming the setting to check. Node.js reports certificate verification
 * failures with OpenSSL's X509_V_ERR names as `code`, and alerts the peer
 * sent as ERR_SSL_..._ALERT_... (RFC 8446 §6.2: certificate_required,
 * bad_certificate, unknown_ca, handshake_failure).
 */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
]);
const EXPIRED = new Set(['CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID']);

export function tlsFailureHint(error: unknown, settings: { readonly ca: string; readonly cert: string; readonly host: string }): string | undefined {
  const code = typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string' ? error.code : '';
  if (UNTRUSTED.has(code)) return `the server's certificate is not signed by a trusted CA (check ${settings.ca})`;
  if (EXPIRED.has(code)) return "the server's certificate is expired or not yet valid";
  if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the server's certificate does not name the host in ${settings.host}`;
  if (/ALERT_CERTIFICATE_REQUIRED|ALERT_HANDSHAKE_FAILURE/.test(code)) return `the server wants a client certificate (set ${settings.cert})`;
  if (/ALERT_(BAD_CERTIFICATE|UNKNOWN_CA|CERTIFICATE_UNKNOWN|CERTIFICATE_EXPIRED|DECRYPT_ERROR)/.test(code)) return `the server refused the client certificate (check ${settings.cert})`;
  return undefined;
}

/** OpenSSL errors carry a multi-line message with source paths; their `reason` says it in a few words. */
export function tlsErrorText(error: unknown): string {
  if (typeof error === 'object' && error !== null && 'reason' in error && typeof error.reason === 'string' && error.reason !== '') return error.reason;
  return error instanceof Error ? error.message : String(error);
}
