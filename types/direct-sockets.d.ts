// TypeScript declarations for the Direct Sockets API as direct-sockets provides it: the draft's
// interfaces (TCPSocket, UDPSocket, TCPServerSocket, MulticastController), plus our TLS option
// (docs/TLS.md). Present in secure contexts only: in pages, and in the dedicated workers they
// start (classic, module, blob:, nested), except where docs/API.md ("Workers") says they are
// absent (a CSP refusing blob: workers, data: URLs, third-party frames); the same declarations
// hold in a worker. Needs TypeScript 5.7 or newer (typed arrays
// generic over their buffer) and the "DOM" lib.
//
// The types follow what the extension really hands a page (extension/page-api.js), and tests
// check both that they match it in a real browser (tests/browser/test_typings.py) and that the
// guide's examples compile against them under `tsc --strict` (tests/test_typings_compile.py).
// Where an answer depends on the options, the class is generic over them, so a socket made with
// `secureTransport: "on"` has `opened.tls`, and one bound with `localAddress` has a
// `multicastController`, without a check for undefined.

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
  /** A byte stream (BYOB readers work): each chunk a fresh Uint8Array of its own. */
  readable: ReadableStream<Uint8Array<ArrayBuffer>>;
  /** Takes any ArrayBuffer, SharedArrayBuffer or view on one; the bytes are copied. */
  writable: WritableStream<AllowSharedBufferSource>;
  remoteAddress: string;
  remotePort: number;
  localAddress: string;
  localPort: number;
  /** Present when the socket is secured (secureTransport "on", or after startTls()). */
  tls?: Readonly<TLSInfo>;
}

/** `opened` of a socket secured from the start (secureTransport "on") or by startTls(). */
interface SecureTCPSocketOpenInfo extends TCPSocketOpenInfo {
  tls: Readonly<TLSInfo>;
}

/** `Secure` is the socket's secureTransport, as the constructor was given it. */
declare class TCPSocket<Secure extends SecureTransport = SecureTransport> {
  constructor(remoteAddress: string, remotePort: number, options?: TCPSocketOptions & { secureTransport?: Secure });
  readonly opened: Promise<Secure extends "on" ? SecureTCPSocketOpenInfo : TCPSocketOpenInfo>;
  readonly closed: Promise<undefined>;
  close(): Promise<undefined>;
  /** For a socket made with secureTransport "starttls": the connection, secured, as a new socket; this one closes. */
  startTls(options?: TLSOptions): TCPSocket<"on">;
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

/** What a page writes: a bound socket names the destination of each datagram. */
interface UDPMessage {
  /** Any ArrayBuffer, SharedArrayBuffer or view on one; the bytes are copied. */
  data: AllowSharedBufferSource;
  remoteAddress?: string;
  remotePort?: number;
  dnsQueryType?: SocketDnsQueryType;
}

/** What a page reads: one datagram as it was sent; a bound socket's say where from. */
interface UDPReceivedMessage {
  data: Uint8Array<ArrayBuffer>;
  remoteAddress?: string;
  remotePort?: number;
}

interface UDPSocketOpenInfo {
  readable: ReadableStream<UDPReceivedMessage>;
  writable: WritableStream<UDPMessage>;
  remoteAddress?: string;
  remotePort?: number;
  localAddress: string;
  localPort: number;
  /** Bound mode only. */
  multicastController?: MulticastController;
}

/** `opened` of a socket made with remoteAddress and remotePort. */
interface ConnectedUDPSocketOpenInfo extends UDPSocketOpenInfo {
  remoteAddress: string;
  remotePort: number;
}

/** `opened` of a socket made with localAddress. */
interface BoundUDPSocketOpenInfo extends UDPSocketOpenInfo {
  readable: ReadableStream<UDPReceivedMessage & { remoteAddress: string; remotePort: number }>;
  writable: WritableStream<UDPMessage & { remoteAddress: string; remotePort: number }>;
  multicastController: MulticastController;
}

/** `Options` is what the constructor was given: its mode decides the shape of `opened`. */
declare class UDPSocket<Options extends UDPSocketOptions = UDPSocketOptions> {
  constructor(options?: Options);
  readonly opened: Promise<
    Options extends { localAddress: string } ? BoundUDPSocketOpenInfo
    : Options extends { remoteAddress: string; remotePort: number } ? ConnectedUDPSocketOpenInfo
    : UDPSocketOpenInfo
  >;
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
  /** A group joined from any source as its address; a source-specific one as both. */
  readonly joinedGroups: ReadonlyArray<string | Readonly<MulticastMembership>>;
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
  readable: ReadableStream<TCPSocket<"off" | "on">>;
  localAddress: string;
  localPort: number;
  /** A TLS server: the certificate it serves, for its clients to pin. */
  tls?: Readonly<{ certificate: TLSCertificateInfo }>;
}

/** `opened` of a server made with secureTransport "on": its connections are secured too. */
interface SecureTCPServerSocketOpenInfo extends TCPServerSocketOpenInfo {
  readable: ReadableStream<TCPSocket<"on">>;
  tls: Readonly<{ certificate: TLSCertificateInfo }>;
}

/** `Secure` is the server's secureTransport, as the constructor was given it. */
declare class TCPServerSocket<Secure extends "off" | "on" = "off" | "on"> {
  constructor(localAddress: string, options?: TCPServerSocketOptions & { secureTransport?: Secure });
  readonly opened: Promise<Secure extends "on" ? SecureTCPServerSocketOpenInfo : TCPServerSocketOpenInfo>;
  readonly closed: Promise<undefined>;
  close(): Promise<undefined>;
}
