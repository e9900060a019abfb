// TypeScript declarations for the Direct Sockets API as direct-sockets provides it: the draft's
// interfaces (TCPSocket, UDPSocket, TCPServerSocket, MulticastController), plus our TLS option
// (docs/TLS.md). A test compares these with what the extension really defines in a page
// (tests/browser/test_typings.py). Present in secure contexts only: in pages, and in the
// dedicated workers they start (classic, module, blob:, nested), except where docs/API.md
// ("Workers") says they are absent (a CSP refusing blob: workers, data: URLs, third-party
// frames). The same declarations hold in a worker.

type SocketDnsQueryType = "ipv4" | "ipv6";
type SecureTransport = "off" | "on" | "starttls";

/** The TLS options of a socket (docs/TLS.md); `startTls()` takes them too. */
interface TLSOptions {
  /** The name sent (SNI) and checked; default: the address given. */
  serverName?: string;
  /** ALPN protocols offered, in order. */
  alpn?: string[];
  /** PEM certificates: the CAs trusted instead of the system's. */
  caCertificates?: string[];
  /** Base64 SHA-256 of SubjectPublicKeyInfo: the keys trusted, instead of any CA. */
  pinnedCertificates?: string[];
}

interface TCPSocketOptions extends TLSOptions {
  sendBufferSize?: number;
  receiveBufferSize?: number;
  noDelay?: boolean;
  /** Milliseconds, at least 1000. */
  keepAliveDelay?: number;
  dnsQueryType?: SocketDnsQueryType;
  secureTransport?: SecureTransport;
}

interface TLSCertificateInfo {
  subject: string;
  issuer: string;
  notBefore: string;
  notAfter: string;
  /** "AB:CD:..." */
  sha256Fingerprint: string;
  /** What `pinnedCertificates` takes. */
  spkiSha256: string;
}

interface TLSInfo {
  version: string;
  cipher: string;
  alpn: string | null;
  peerCertificate?: TLSCertificateInfo;
}

interface TCPSocketOpenInfo {
  readable: ReadableStream<Uint8Array>;
  writable: WritableStream<BufferSource>;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** Present when the socket is secured (secureTransport "on", or after startTls()). */
  tls?: Readonly<TLSInfo>;
}

declare class TCPSocket {
  constructor(remoteAddress: string, remotePort: number, options?: TCPSocketOptions);
  readonly opened: Promise<TCPSocketOpenInfo>;
  readonly closed: Promise<undefined>;
  close(): Promise<undefined>;
  /** For a socket made with secureTransport "starttls": the connection, secured, as a new socket; this one closes. */
  startTls(options?: TLSOptions): TCPSocket;
}

interface UDPSocketOptions {
  remoteAddress?: string;
  remotePort?: number;
  localAddress?: string;
  localPort?: number;
  sendBufferSize?: number;
  receiveBufferSize?: number;
  dnsQueryType?: SocketDnsQueryType;
  ipv6Only?: boolean;
  multicastTimeToLive?: number;
  multicastLoopback?: boolean;
  multicastAllowAddressSharing?: boolean;
}

interface UDPMessage {
  data: BufferSource;
  remoteAddress?: string;
  remotePort?: number;
  dnsQueryType?: SocketDnsQueryType;
}

interface UDPSocketOpenInfo {
  readable: ReadableStream<UDPMessage>;
  writable: WritableStream<UDPMessage>;
  remoteAddress?: string;
  remotePort?: number;
  localAddress: string;
  localPort: number;
  /** Bound mode only. */
  multicastController?: MulticastController;
}

declare class UDPSocket {
  constructor(options?: UDPSocketOptions);
  readonly opened: Promise<UDPSocketOpenInfo>;
  readonly closed: Promise<undefined>;
  close(): Promise<undefined>;
}

interface MulticastGroupOptions {
  sourceAddress?: string;
}

interface MulticastMembership {
  groupAddress: string;
  sourceAddress: string;
}

declare class MulticastController {
  private constructor();
  joinGroup(groupAddress: string, options?: MulticastGroupOptions): Promise<undefined>;
  leaveGroup(groupAddress: string, options?: MulticastGroupOptions): Promise<undefined>;
  readonly joinedGroups: ReadonlyArray<string | MulticastMembership>;
}

interface TCPServerSocketOptions {
  localPort?: number;
  backlog?: number;
  ipv6Only?: boolean;
  /** "on": serve TLS with the site's own certificate (docs/TLS.md). */
  secureTransport?: "off" | "on";
}

interface TCPServerSocketOpenInfo {
  /** The accepted connections. */
  readable: ReadableStream<TCPSocket>;
  localAddress: string;
  localPort: number;
  /** A TLS server: the certificate it serves, for its clients to pin. */
  tls?: Readonly<{ certificate: TLSCertificateInfo }>;
}

declare class TCPServerSocket {
  constructor(localAddress: string, options?: TCPServerSocketOptions);
  readonly opened: Promise<TCPServerSocketOpenInfo>;
  readonly closed: Promise<undefined>;
  close(): Promise<undefined>;
}
