/** The SIP gateway: the service as an RFC 3903 presence user agent. */
export { parseSipServerUri, sipGatewayConfigSchema, type SipGatewayConfig, type SipGatewayConfigInput, type SipServerAddress } from './config.js';
export { DigestAuthenticator, type DigestCredentials } from './credentials.js';
export { buildAuthorization, chooseChallenge, computeDigest, parseChallenges, parseCredentials, verifyCredentials, type DigestAlgorithm, type DigestChallenge } from './digest.js';
export { buildRequest, parseMessage, parseResponse, SipParseError, type SipRequestSpec, type SipResponse } from './message.js';
export { SipPublisherPool, SipPoolClosedError, type SipPublisherPoolOptions } from './pool.js';
export { defaultRefreshDelayMs, Publication, systemClock, type Clock, type PublicationOptions, type PublishKind, type PublishOutcome } from './publisher.js';
export { createTcpTransport, createTlsTransport, createTransport, createUdpTransport, SipTransportError, type SipTransport, type SipTransportProtocol, type TransactionTimers, type TransportOptions } from './transport.js';
export { checkSipServerIdentity } from './tls-identity.js';
