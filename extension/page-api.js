// @ts-check
// The page-facing Direct Sockets API, built in the page's own realm (a MAIN-world content
// script at document_start): Firefox's Xray wrappers refuse page-facing objects built anywhere
// else. It holds no authority: every message goes through the isolated bridge to the
// background, which stamps the sender as the browser reports it, and to the host, which decides.
// The same function builds the API inside the page's dedicated workers (`worker` is then what
// the page told it, see "dedicated workers" below): one implementation, serialized into each.
(function directSocketsApi(worker) {
  'use strict';
  if (!globalThis.isSecureContext || typeof globalThis.TCPSocket !== 'undefined') return;

  // -- built-ins -------------------------------------------------------------------------------------
  // Built-ins are captured before any page script runs, so a page that replaces them later
  // cannot change how the API behaves for it.
  const {
    Promise: PromiseCtor, ReadableStream: ReadableStreamCtor, WritableStream: WritableStreamCtor,
    DOMException: DOMExceptionCtor, TypeError: TypeErrorCtor, Uint8Array: Uint8ArrayCtor,
    ArrayBuffer: ArrayBufferCtor, MessageChannel: MessageChannelCtor,
    MessageEvent: MessageEventCtor, Map: MapCtor, Object: ObjectCtor,
    Number: NumberCtor, Math: MathObj, Reflect: ReflectObj, Symbol: SymbolCtor, queueMicrotask: queueTask,
    URL: URLCtor, Set: SetCtor, Array: ArrayCtor,
  } = globalThis;
  const apply = ReflectObj.apply;
  const isView = ArrayBufferCtor.isView;
  const portPost = MessagePort.prototype.postMessage;
  const addListener = EventTarget.prototype.addEventListener;
  const removeListener = EventTarget.prototype.removeEventListener;
  const dispatch = EventTarget.prototype.dispatchEvent;
  const promiseCatch = PromiseCtor.prototype.catch;
  const mapGet = MapCtor.prototype.get;
  const mapSet = MapCtor.prototype.set;
  const mapDelete = MapCtor.prototype.delete;
  const mapForEach = MapCtor.prototype.forEach;
  const setAdd = SetCtor.prototype.add;
  const setHas = SetCtor.prototype.has;
  const setDelete = SetCtor.prototype.delete;
  const arrayPush = ArrayCtor.prototype.push;
  const arrayFilter = ArrayCtor.prototype.filter;
  const arrayMap = ArrayCtor.prototype.map;
  const freeze = ObjectCtor.freeze;
  const regexTest = RegExp.prototype.test;
  const getHostname = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'hostname').get;
  const u8Slice = Uint8ArrayCtor.prototype.slice;
  const u8Set = Uint8ArrayCtor.prototype.set;
  const u8Subarray = Uint8ArrayCtor.prototype.subarray;
  const getBufferByteLength = ObjectCtor.getOwnPropertyDescriptor(ArrayBufferCtor.prototype, 'byteLength').get;
  const SharedArrayBufferCtor = globalThis.SharedArrayBuffer;
  // (A worker has no DOM: there these stay null, and the bulk frame is the page's.)
  const createElement = worker ? null : Document.prototype.createElement;
  const appendChild = worker ? null : Node.prototype.appendChild;
  const setAttribute = worker ? null : Element.prototype.setAttribute;
  const getDocumentElement = worker ? null : ObjectCtor.getOwnPropertyDescriptor(Document.prototype, 'documentElement').get;
  const getContentWindow = worker ? null : ObjectCtor.getOwnPropertyDescriptor(HTMLIFrameElement.prototype, 'contentWindow').get;
  const elementRemove = worker ? null : Element.prototype.remove;
  const windowPost = globalThis.postMessage;
  const getOrigin = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'origin').get;
  const getPort = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'port').get;
  const getPathname = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'pathname').get;
  const setTimer = globalThis.setTimeout;
  const WebSocketCtor = globalThis.WebSocket;
  const wsSend = WebSocketCtor.prototype.send;
  const wsClose = WebSocketCtor.prototype.close;
  const setBinaryType = ObjectCtor.getOwnPropertyDescriptor(WebSocketCtor.prototype, 'binaryType').set;
  const getEventData = ObjectCtor.getOwnPropertyDescriptor(MessageEvent.prototype, 'data').get;
  const jsonParse = JSON.parse;
  const jsonStringify = JSON.stringify;
  const clearTimer = globalThis.clearTimeout;

  // Event names of the one-time handover of the private channel to the isolated bridge.
  const EVT_PORT = 'direct-sockets:port';
  const EVT_READY = 'direct-sockets:bridge-ready';
  // What a worker's API says first to the realm that started it, with its port (see below).
  const WORKER_HELLO = 'direct-sockets:worker';

  // -- the host's limits ------------------------------------------------------------------------
  // Every size and window on the wire is the host's: its hello says them (`limits`,
  // docs/PROTOCOL.md), and the background hands them to this API before anything the host
  // answers (a worker gets them from the realm that started it). Until they come, or when one
  // is out of its sane range below, no socket opens: the API refuses rather than guesses.
  // (maxChunk: bytes per native message; bulkChunk: the same on the bulk WebSocket; sendWindow,
  // receiveWindow: unacknowledged bytes each way; bulkReceiveWindow, maxBulkSendWindow: the
  // larger windows of the bulk path; udpSendWindow, udpReceiveWindow: datagrams; maxDatagram:
  // bytes in one; acceptWindow: connections a server accepts ahead of its reader.)
  const KiB = 1024;
  const MiB = 1024 * KiB;
  /** [least, most] of each limit: what this API can work with whatever the host says. */
  const LIMIT_RANGES = [
    ['maxChunk', 4 * KiB, MiB], ['bulkChunk', 4 * KiB, 16 * MiB],
    ['sendWindow', 4 * KiB, 64 * MiB], ['receiveWindow', 4 * KiB, 64 * MiB],
    ['bulkReceiveWindow', 4 * KiB, 64 * MiB], ['maxBulkSendWindow', 4 * KiB, 64 * MiB],
    ['udpSendWindow', 1, 1024], ['udpReceiveWindow', 1, 1024], ['maxDatagram', 1, 65535], ['acceptWindow', 1, 1024],
  ];
  /** @type {Readonly<Record<string, number>> | null} the host's limits, checked */
  let limits = null;

  /** The limits as the host sent them, if every one is there and in its range; else null. */
  function checkedLimits(value) {
    if (value === null || typeof value !== 'object') return null;
    const out = {};
    for (let i = 0; i < LIMIT_RANGES.length; i++) {
      const [name, least, most] = LIMIT_RANGES[i];
      const number = value[name];
      if (!NumberCtor.isSafeInteger(number) || number < least || number > most) return null;
      out[name] = number;
    }
    return freeze(out);
  }

  // -- WebIDL conversions and small helpers ------------------------------------------------------
  // What the interfaces take from the page, converted as WebIDL says, and the few helpers every
  // layer below uses. No messages, no state.

  function toDOMString(value, what) {
    if (typeof value === 'symbol') throw new TypeErrorCtor(`${what}: cannot convert a Symbol to a string.`);
    return `${value}`;
  }

  function toNumber(value, what) {
    if (typeof value === 'symbol' || typeof value === 'bigint') {
      throw new TypeErrorCtor(`${what}: cannot convert a ${typeof value} to a number.`);
    }
    return +value;
  }

  function enforceRange(value, max, what) {
    const x = toNumber(value, what);
    if (!NumberCtor.isFinite(x)) throw new TypeErrorCtor(`${what} is not a finite number.`);
    const integer = MathObj.trunc(x);
    if (integer < 0 || integer > max) throw new TypeErrorCtor(`${what} is outside the range [0, ${max}].`);
    return integer + 0; // -0 -> 0
  }

  /** `unsigned short` without [EnforceRange]: wraps modulo 2^16, as WebIDL says. */
  function wrapUnsignedShort(value, what) {
    const x = toNumber(value, what);
    if (!NumberCtor.isFinite(x) || x === 0) return 0;
    const integer = MathObj.trunc(x);
    return ((integer % 65536) + 65536) % 65536;
  }

  function toDictionary(value, what) {
    if (value === undefined || value === null) return {};
    if (typeof value !== 'object' && typeof value !== 'function') {
      throw new TypeErrorCtor(`${what} is not an object.`);
    }
    return value;
  }

  function toEnum(value, allowed, what) {
    const text = toDOMString(value, what);
    if (!allowed.includes(text)) throw new TypeErrorCtor(`'${text}' is not a valid value for ${what}.`);
    return text;
  }

  /** sequence<DOMString>, through the value's iterator as WebIDL does. */
  function toStringSequence(value, what) {
    if (value === null || (typeof value !== 'object' && typeof value !== 'function') || typeof value[SymbolCtor.iterator] !== 'function') {
      throw new TypeErrorCtor(`${what} is not a sequence.`);
    }
    const out = [];
    for (const item of value) apply(arrayPush, out, [toDOMString(item, what)]);
    return out;
  }

  const PIN = /^[A-Za-z0-9+/]{43}=$/;
  const PEM = /-----BEGIN CERTIFICATE-----[\s\S]+-----END CERTIFICATE-----/;

  /**
   * The TLS members shared by TCPSocketOptions and TLSOptions (startTls), read in
   * lexicographic order by the caller; checked here so that a typo fails at once.
   * @param {any} dict @param {string} what @param {Record<string, any>} out
   */
  function readTlsMember(dict, name, what, out) {
    const member = dict[name];
    if (member === undefined) return;
    if (name === 'serverName') {
      const text = toDOMString(member, name);
      if (text.length === 0 || text.length > 253 || apply(regexTest, /\s/, [text])) throw new TypeErrorCtor(`${what}: serverName is not a host name.`);
      out.serverName = text;
      return;
    }
    const list = toStringSequence(member, `${what}: ${name}`);
    if (list.length > 64) throw new TypeErrorCtor(`${what}: ${name} has more than 64 entries.`);
    for (const item of list) {
      if (name === 'alpn' && (item.length === 0 || item.length > 255)) throw new TypeErrorCtor(`${what}: an ALPN protocol name must have 1 to 255 characters.`);
      if (name === 'caCertificates' && !apply(regexTest, PEM, [item])) throw new TypeErrorCtor(`${what}: caCertificates must be PEM certificates.`);
      if (name === 'pinnedCertificates' && !apply(regexTest, PIN, [item])) {
        throw new TypeErrorCtor(`${what}: a pinned certificate is the base64 SHA-256 of its SubjectPublicKeyInfo (44 characters).`);
      }
    }
    out[name] = list;
  }

  const TLS_MEMBERS = ['alpn', 'caCertificates', 'pinnedCertificates', 'serverName'];

  /** TLSOptions: what startTls() takes. */
  function convertTlsOptions(value) {
    const dict = toDictionary(value, "Failed to execute 'startTls' on 'TCPSocket': options");
    const out = {};
    for (const name of TLS_MEMBERS) readTlsMember(dict, name, "Failed to execute 'startTls' on 'TCPSocket'", out);
    return out;
  }

  const DNS_QUERY_TYPES = ['ipv4', 'ipv6'];
  const U32 = 4294967295;

  /**
   * Reads a dictionary's members, each once, in the order asked (WebIDL: lexicographic), into
   * `out`: `read(name, convert)`; an absent member stays absent.
   * @returns {(name: string, convert: (value: any, name: string) => any) => void}
   */
  function memberReader(dict, out) {
    return (name, convert) => {
      const member = dict[name];
      if (member !== undefined) out[name] = convert(member, name);
    };
  }

  /** TCPSocketOptions. */
  function convertTcpOptions(value) {
    const what = "Failed to construct 'TCPSocket'";
    const dict = toDictionary(value, `${what}: options`);
    const out = {};
    const read = memberReader(dict, out);
    const tls = (name) => readTlsMember(dict, name, what, out);
    tls('alpn');
    tls('caCertificates');
    read('dnsQueryType', (v) => toEnum(v, DNS_QUERY_TYPES, 'SocketDnsQueryType'));
    read('keepAliveDelay', (v, n) => enforceRange(v, U32, n));
    out.noDelay = !!dict.noDelay; // (absent: false)
    tls('pinnedCertificates');
    read('receiveBufferSize', (v, n) => enforceRange(v, U32, n));
    read('secureTransport', (v) => toEnum(v, ['off', 'on', 'starttls'], 'SecureTransport'));
    read('sendBufferSize', (v, n) => enforceRange(v, U32, n));
    tls('serverName');
    return out;
  }

  /** UDPSocketOptions. */
  function convertUdpOptions(value) {
    const dict = toDictionary(value, "Failed to construct 'UDPSocket': options");
    const out = {};
    const read = memberReader(dict, out);
    read('dnsQueryType', (v, n) => toEnum(v, DNS_QUERY_TYPES, n));
    read('ipv6Only', (v) => !!v);
    read('localAddress', toDOMString);
    read('localPort', (v, n) => enforceRange(v, 65535, n));
    read('multicastAllowAddressSharing', (v) => !!v);
    read('multicastLoopback', (v) => !!v);
    read('multicastTimeToLive', (v, n) => enforceRange(v, 255, n));
    read('receiveBufferSize', (v, n) => enforceRange(v, U32, n));
    read('remoteAddress', toDOMString);
    read('remotePort', (v, n) => enforceRange(v, 65535, n));
    read('sendBufferSize', (v, n) => enforceRange(v, U32, n));
    return out;
  }

  /** TCPServerSocketOptions. */
  function convertServerOptions(value) {
    const dict = toDictionary(value, "Failed to construct 'TCPServerSocket': options");
    const out = {};
    const read = memberReader(dict, out);
    read('backlog', (v, n) => enforceRange(v, U32, n));
    read('ipv6Only', (v) => !!v);
    read('localPort', (v, n) => enforceRange(v, 65535, n));
    read('secureTransport', (v) => toEnum(v, ['off', 'on'], 'SecureTransport'));
    return out;
  }

  const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

  /**
   * An IP literal in canonical form, with what kind of address it is; null for anything else
   * (a name, a bracketed or scoped address).
   * @returns {{version: 4|6, text: string, multicast: boolean, loopback: boolean, unspecified: boolean} | null}
   */
  function parseIp(text) {
    if (apply(regexTest, IPV4, [text])) {
      const first = +text.split('.')[0];
      return { version: 4, text, multicast: first >= 224 && first <= 239, loopback: first === 127, unspecified: text === '0.0.0.0' };
    }
    if (!text.includes(':') || /[[\]%/]/.test(text)) return null;
    let host;
    try {
      host = apply(getHostname, new URLCtor(`http://[${text}]/`), []);
    } catch {
      return null;
    }
    const canonical = host.slice(1, -1);
    return { version: 6, text: canonical, multicast: /^ff[0-9a-f]{2}:/.test(canonical), loopback: canonical === '::1', unspecified: canonical === '::' };
  }

  /**
   * The bytes of a BufferSource as a view on the page's own memory, not copied; null when the
   * value is not a BufferSource or lies in shared memory (which a WebSocket refuses).
   * @returns {Uint8Array | null}
   */
  function viewBufferSource(chunk) {
    let view;
    if (isView(chunk)) view = new Uint8ArrayCtor(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    else {
      try {
        apply(getBufferByteLength, chunk, []);
      } catch {
        return null; // not an ArrayBuffer
      }
      view = new Uint8ArrayCtor(chunk);
    }
    if (SharedArrayBufferCtor && view.buffer instanceof SharedArrayBufferCtor) return null;
    return view;
  }

  /** A private copy of the bytes of a BufferSource, or null if `chunk` is not one. */
  function copyBufferSource(chunk) {
    if (isView(chunk)) {
      return apply(u8Slice, new Uint8ArrayCtor(chunk.buffer, chunk.byteOffset, chunk.byteLength), []);
    }
    let isBuffer = false;
    try {
      apply(getBufferByteLength, chunk, []);
      isBuffer = true;
    } catch { /* not an ArrayBuffer */ }
    if (isBuffer || (SharedArrayBufferCtor && chunk instanceof SharedArrayBufferCtor)) {
      return apply(u8Slice, new Uint8ArrayCtor(chunk), []);
    }
    return null;
  }

  /** The document may use the API: top-level, or a frame whose every ancestor has its origin
   * (2.13). A courtesy for honest pages: the bridge and the background check it again. */
  function documentAllowed() {
    if (worker) return true; // its page was, or it would have no API (see wrapWorkers)
    try {
      const origin = window.location.origin;
      for (let w = window; w !== w.top;) {
        w = w.parent;
        if (w.location.origin !== origin) return false;
      }
      return true;
    } catch {
      return false; // a cross-origin ancestor
    }
  }

  /** What the host reported about a TLS session, as a page-realm object nobody can change. */
  function deepFreeze(value) {
    if (value === null || typeof value !== 'object') return value;
    const out = {};
    for (const key of ObjectCtor.keys(value)) out[key] = deepFreeze(value[key]);
    return freeze(out);
  }

  function domError(name, message) {
    return new DOMExceptionCtor(message, name);
  }

  function markHandled(promise) {
    apply(promiseCatch, promise, [() => {}]);
    return promise;
  }

  function deferred() {
    let resolve, reject;
    const promise = new PromiseCtor((res, rej) => { resolve = res; reject = rej; });
    return { promise, resolve, reject };
  }

  // -- the private channel -------------------------------------------------------------------

  const channel = new MessageChannelCtor();
  const port = channel.port1;
  let bridged = false;

  function handOver() {
    if (worker) return (bridged = workerHandOver(channel.port2));
    // Synchronous DOM events: the bridge (isolated world) takes the port inside dispatch and
    // cancels the event to say so. Both scripts run before any page script can listen.
    const event = new MessageEventCtor(EVT_PORT, { ports: [channel.port2], cancelable: true });
    bridged = !apply(dispatch, window, [event]);
    return bridged;
  }
  if (!handOver()) {
    const onReady = () => {
      if (handOver()) apply(removeListener, window, [EVT_READY, onReady, true]);
    };
    apply(addListener, window, [EVT_READY, onReady, true]);
  }

  /** @type {Map<number, SocketCore>} */
  const sockets = new MapCtor();
  let nextSid = 1;

  function post(message, transfer) {
    apply(portPost, port, [message, transfer || []]);
  }

  /** Whether this document's Permissions-Policy forbids the API: known at once when the
   * extension marked the response (a Server-Timing entry, see background/policy.js), else from the
   * extension's answer to the first attempt. */
  let policyForbidden = !!worker?.policyForbidden;
  if (!worker) try {
    const navigation = performance.getEntriesByType('navigation')[0];
    policyForbidden = !!navigation && navigation.serverTiming.some((entry) => entry.name === 'direct-sockets-forbidden');
  } catch { /* no timing: the first attempt tells */ }

  port.onmessage = (event) => {
    const message = apply(getEventData, event, []); // (the page may have redefined `data`)
    if (worker && message.op === 'frame-port') {
      framePortArrived(apply(getEventPorts, event, [])[0]);
      return;
    }
    if (message.op === 'limits') {
      limits = checkedLimits(message.limits);
      forwardConfig(); // and to our workers
      return;
    }
    if (message.op === 'config') {
      if (worker) limits = checkedLimits(message.limits);
      hostFrame = message.bulkHostFrame === true;
      // (The host's frame is the one each socket's offer names: useHostFrame keeps it.)
      if (!hostFrame) bulkFrameUrl = typeof message.bulkFrame === 'string' ? message.bulkFrame : null;
      bulkDirectFirst = message.bulkDirectFirst === true;
      const size = message.bulkMessageSize;
      if (NumberCtor.isSafeInteger(size) && size >= 16 * KiB && size <= 16 * MiB) bulkMessageSize = size;
      forwardConfig(); // to our workers, which never learn the frame's URL
      return;
    }
    if (message.policy) policyForbidden = true;
    const socket = apply(mapGet, sockets, [message.sid]);
    if (!socket) return;
    if (message.bulk && (socket.channel === 'frame' || socket.channel === 'direct')) {
      // The host told the page of this end on the socket's WebSocket, after its last bytes;
      // this copy counts only if the frame never delivers it.
      setTimer(() => socket.onMessage({ ...message, bulk: false }), 2000);
      return;
    }
    socket.onMessage(message);
  };

  // -- the bulk path (docs/BULK.md) ----------------------------------------------------------
  // A TCP socket the host offers a WebSocket carries its stream through the extension's bulk
  // frame, embedded here hidden, over a MessagePort: native messaging keeps every decision, and
  // whatever cannot attach falls back to it.

  const BULK_ATTACH_MS = 3000;
  /** @type {string | null} */
  let bulkFrameUrl = null;
  // Firefox: the frame is the host's own, embedded once a socket needs it, from the URL in the
  // socket's offer (a port of this page's alone, under a loopback name of another site than
  // ours; docs/BULK.md): a worker's own WebSocket stalls with this realm's thread, a port to
  // that frame's process does not.
  let hostFrame = false;
  const FRAME_READY_MS = 3000; // to load
  const FRAME_ANSWER_MS = 500; // to answer, once loaded
  // Whether to try this page's own WebSocket first (the fastest way, measured): not where the
  // browser would hold it for a Local Network Access prompt (see bridge.js).
  let bulkDirectFirst = false;
  // Set once this realm's own WebSocket could not even reach the host (a Local Network Access or
  // CSP refusal): later sockets go straight to the frame. Chromium delays each new WebSocket of a
  // process by about 2^(recent failed connections) x 1-5 s / 65536, so a failed try per socket
  // slowed every attach after the twelfth, and the page's own WebSockets too (docs/BULK.md).
  let directRefused = false;
  // The most bytes in one WebSocket message, as suits this browser (bridge.js, docs/BULK.md).
  // (The bridge says it at the handover, before any socket; the host's bulkChunk caps it.)
  let bulkMessageSize = 16 * MiB;
  /** @type {MessagePort | null} */
  let framePort = null;
  let frameState = 'none'; // none -> loading -> ready, or failed
  /** @type {Array<() => void>} */
  let frameWaiters = [];
  /** The frame's window and origin once loaded: more ports to it, one per worker. */
  let frameWindow = null;
  let frameWindowOrigin = '';
  /** The page's frame element, so that a superseded host's frame can be taken out. */
  let frameElement = null;

  // After the current task: a message to ourselves on a private channel (no timer clamping).
  const taskChannel = new MessageChannelCtor();
  /** @type {Array<() => void>} */
  let afterTaskQueue = [];
  taskChannel.port1.onmessage = () => {
    const run = afterTaskQueue;
    afterTaskQueue = [];
    for (const callback of run) callback();
  };
  function afterTask(callback) {
    apply(arrayPush, afterTaskQueue, [callback]);
    if (afterTaskQueue.length === 1) apply(portPost, taskChannel.port2, [null]);
  }

  function framePost(message, transfer) {
    const control = bulkControl(message);
    if (control !== null) message = { op: 'control', sid: message.sid, text: control };
    if (framePort) apply(portPost, framePort, [message, transfer || []]);
  }

  /**
   * Runs `then` once the frame is ready, or `failed` if it cannot be had (the host's frame: in
   * time; the extension's: the socket's timer decides). `hostFrameUrl`: the host's frame, as
   * the socket's offer named it.
   */
  function whenFrameReady(then, failed, hostFrameUrl) {
    if (hostFrame) useHostFrame(hostFrameUrl);
    if (frameState === 'ready') return then();
    if (frameState === 'failed' || bulkFrameUrl === null) return failed();
    apply(arrayPush, frameWaiters, [{ then, failed }]);
    if (frameState !== 'none') return undefined;
    frameState = 'loading';
    if (worker) {
      // A worker's own port to the page's frame, so its bytes never wait for the page's thread.
      const asked = bulkFrameUrl;
      newFramePort((framed) => {
        if (bulkFrameUrl !== asked) {
          if (framed) apply(portClose, framed, []); // for a frame since superseded
          return undefined;
        }
        if (!framed) return frameSettled(false);
        framePort = framed;
        framePort.onmessage = (event) => fromFrame(event.data);
        return undefined;
      }, hostFrameUrl);
      return undefined;
    }
    const root = apply(getDocumentElement, document, []);
    if (!root) return frameSettled(false);
    // The host's frame says it is ready in time, or never will: its page's CSP refused it.
    const url = bulkFrameUrl;
    const notReady = () => { if (frameState === 'loading' && bulkFrameUrl === url) frameSettled(false); };
    if (hostFrame) setTimer(notReady, FRAME_READY_MS);
    const frame = apply(createElement, document, ['iframe']);
    // A CSP that refuses it, or a host that is gone, fires `error` at the frame (Firefox; a
    // page that stops the event waits out the timer).
    apply(addListener, frame, ['error', notReady, { once: true }]);
    apply(setAttribute, frame, ['hidden', '']);
    apply(setAttribute, frame, ['aria-hidden', 'true']);
    apply(setAttribute, frame, ['style', 'display:none']);
    apply(setAttribute, frame, ['src', bulkFrameUrl]);
    const frameOrigin = apply(getOrigin, new URLCtor(bulkFrameUrl), []);
    apply(addListener, frame, ['load', () => {
      const bulkChannel = new MessageChannelCtor();
      const target = apply(getContentWindow, frame, []);
      if (!target || bulkFrameUrl !== url) return; // superseded while it loaded
      frameWindow = target;
      frameWindowOrigin = frameOrigin;
      framePort = bulkChannel.port1;
      framePort.onmessage = (event) => fromFrame(event.data);
      apply(windowPost, target, ['direct-sockets-bulk', frameOrigin, [bulkChannel.port2]]);
      // Loaded, its script has run, and it answers at once; a page its CSP refused never does.
      if (hostFrame) setTimer(notReady, FRAME_ANSWER_MS);
    }, { once: true }]);
    apply(appendChild, root, [frame]);
    frameElement = frame;
    return undefined;
  }

  /**
   * The page's own WebSocket to the host: `attached(ws)` once the host took the secret,
   * `failed()` if it cannot be had (a CSP refusal, a closed door). What arrives goes to `core`.
   */
  function openDirect(core, offer, attached, failed) {
    let ws;
    try {
      ws = new WebSocketCtor(offer.url);
    } catch {
      directRefused = true;
      failed();
      return;
    }
    apply(setBinaryType, ws, ['arraybuffer']);
    let isOpen = false;
    let isAttached = false;
    let ended = false;
    apply(addListener, ws, ['open', () => {
      isOpen = true;
      apply(wsSend, ws, [offer.token]);
    }]);
    apply(addListener, ws, ['message', (event) => {
      const data = apply(getEventData, event, []);
      if (typeof data !== 'string') {
        core.onMessage({ op: 'data', sid: core.sid, buf: data });
        return;
      }
      let parsed;
      try {
        parsed = jsonParse(data);
      } catch {
        return;
      }
      if (parsed.type === 'attached') {
        isAttached = true;
        attached(ws);
        return;
      }
      if (parsed.type === 'closed' || parsed.type === 'error') ended = true;
      core.onMessage({ op: parsed.type, sid: core.sid, bytes: parsed.bytes, name: parsed.name, message: parsed.message });
    }]);
    apply(addListener, ws, ['close', () => {
      if (!isOpen) directRefused = true; // refused before a handshake: not the host's answer
      if (!isAttached) failed();
      else if (!ended) core.onMessage({ op: 'error', sid: core.sid, name: 'NetworkError', message: 'Network error.' });
    }]);
  }

  /**
   * A stream's control message as the bulk WebSocket's text (docs/BULK.md), or null for one
   * that is not: the one encoder, for the page's own WebSocket and the bulk frame's (which
   * sends the text as it is).
   */
  function bulkControl(message) {
    switch (message.op) {
      case 'read': return jsonStringify({ type: 'read', bytes: message.bytes });
      case 'shutdown': return jsonStringify({ type: 'shutdown', abort: !!message.abort });
      case 'cancel': return jsonStringify({ type: 'cancel' });
      default: return null;
    }
  }

  function directPost(ws, message, transfer) {
    const control = bulkControl(message);
    if (message.op === 'send') apply(wsSend, ws, [message.buf]);
    else if (control !== null) apply(wsSend, ws, [control]);
    else post(message, transfer);
  }

  function frameSettled(ready) {
    if (frameState !== 'loading') return;
    frameState = ready ? 'ready' : 'failed';
    const waiting = frameWaiters;
    frameWaiters = [];
    for (const waiter of waiting) {
      if (ready) waiter.then();
      else waiter.failed();
    }
  }

  /**
   * The host's frame at `frameUrl`, from a socket's offer: only `http://localhost:PORT/frame` or
   * `http://127.0.0.1:PORT/frame`, nothing else is embedded. Only the frame the offer names is
   * ever used: one from before (a host since restarted, a listener since closed) is dropped, as
   * its port may now be anyone's. (In a worker the URL names the port to ask the page for.)
   */
  function useHostFrame(frameUrl) {
    let url;
    try {
      url = new URLCtor(frameUrl);
    } catch {
      url = null;
    }
    const name = url && apply(getHostname, url, []);
    const valid = url !== null && apply(getHref, url, []) === frameUrl && apply(getProtocol, url, []) === 'http:'
      && (name === 'localhost' || name === '127.0.0.1') && !!apply(getPort, url, []) && apply(getPathname, url, []) === '/frame';
    const wanted = valid ? frameUrl : null;
    if (wanted === bulkFrameUrl) return;
    if (framePort) apply(portClose, framePort, []);
    if (frameElement) apply(elementRemove, frameElement, []);
    bulkFrameUrl = wanted;
    frameState = 'none';
    framePort = null;
    frameWindow = null;
    frameElement = null;
    const waiting = frameWaiters; // they asked for the frame that is gone
    frameWaiters = [];
    for (const waiter of waiting) waiter.failed();
  }

  function fromFrame(message) {
    if (!message || typeof message !== 'object') return;
    if (message.op === 'frame-ready') {
      frameSettled(true);
      return;
    }
    const socket = apply(mapGet, sockets, [message.sid]);
    if (!socket) return;
    if (message.op === 'attached') socket.bulkAttached('frame', null);
    else if (message.op === 'bulk_failed') socket.bulkFailed(String(message.reason));
    else if (socket.channel === 'frame') socket.onMessage(message);
  }

  // -- what every socket shares: opened, closed and how it fails ---------------------------------

  /** A token only this script holds: it lets the interfaces adopt a core without validation. */
  const ADOPT = SymbolCtor('adopt');

  class SocketCore {
    /** @param {number} [sid] given for a connection a server accepted (its id was chosen then) */
    constructor(sid = nextSid++) {
      this.sid = sid;
      this.state = 'opening'; // opening -> open -> ended (closed settled)
      this.opened = deferred();
      this.closed = deferred();
      markHandled(this.closed.promise);
      this.firstError = null;
      this.info = null; // the open info dictionary, once opened resolved
      this.readableDone = false;
      this.writableDone = false;
      this.readController = null;
      this.writeController = null;
      this.pullWaiter = null;
      this.waiters = []; // {until, resolve, reject}: writes waiting for acknowledgements
      this.finWaiter = null;
      apply(mapSet, sockets, [this.sid, this]);
    }

    /** Sends the open request, or fails at once when no bridge can carry it (never hangs). */
    request(message, valid = true) {
      if (!bridged || !valid) {
        queueTask(() => this.fail(domError('NetworkError', 'Network error.')));
        return;
      }
      post({ ...message, op: 'open', sid: this.sid });
    }

    /** A message of the socket's stream (credit, bytes, the end of writing or reading). */
    postStream(message, transfer) {
      post(message, transfer);
    }

    onMessage(message) {
      switch (message.op) {
        case 'opened':
          if (this.state !== 'opening') return undefined;
          return limits === null ? this.refuseWithoutLimits() : this.onOpened(message);
        case 'fin_sent': return this.onFinSent();
        case 'closed': return this.onClosed();
        case 'error': return this.fail(domError(message.name || 'NetworkError', message.message || 'Network error.'));
        default: return this.onData(message);
      }
    }

    /** Opened, but the host's limits never came (or made no sense): closed, never guessed. */
    refuseWithoutLimits() {
      post({ op: 'release', sid: this.sid });
      this.fail(domError('NetworkError', 'Network error.'));
    }

    resolveOpened(info) {
      this.state = 'open';
      this.info = info;
      this.opened.resolve(info);
    }

    // the streams: each kind of socket reads and writes through its pull() and write()

    /**
     * The socket's readable: each pull() grants the host credit up to `highWaterMark` (bytes,
     * datagrams or connections); `type` 'bytes' for a byte stream (BYOB readers).
     * @param {number} highWaterMark @param {'bytes'} [type]
     */
    newReadable(highWaterMark, type = undefined) {
      const source = {
        start: (controller) => { this.readController = controller; },
        pull: (controller) => this.pull(controller),
        cancel: () => this.cancelReading(),
      };
      if (type !== undefined) source.type = type;
      return new ReadableStreamCtor(source, { highWaterMark });
    }

    /** The socket's writable: one write at a time, each waiting for the socket's send window. */
    newWritable() {
      return new WritableStreamCtor({
        start: (controller) => { this.writeController = controller; },
        write: (chunk) => this.write(chunk),
        close: () => this.closeWriting(),
        abort: () => this.abortWriting(),
      }, { highWaterMark: 1 });
    }

    // reading: pull() waits for the next message so that the stream never asks twice

    waitForArrival() {
      return new PromiseCtor((resolve) => { this.pullWaiter = resolve; });
    }

    wakePull() {
      const waiter = this.pullWaiter;
      this.pullWaiter = null;
      if (waiter) waiter();
    }

    cancelReading() {
      this.readableDone = true;
      this.wakePull();
      if (this.state === 'open') this.postStream({ op: 'cancel', sid: this.sid });
    }

    // writing: the window, the acknowledgements and the end of the writable

    acked(count, until) {
      if (this.firstError && !this.writableDone) return PromiseCtor.reject(this.firstError);
      if (count >= until) return PromiseCtor.resolve();
      const waiter = deferred();
      apply(arrayPush, this.waiters, [{ until, resolve: waiter.resolve, reject: waiter.reject }]);
      return waiter.promise;
    }

    wakeWriters(count) {
      const waiting = this.waiters;
      this.waiters = [];
      for (const waiter of waiting) {
        if (count >= waiter.until) waiter.resolve();
        else apply(arrayPush, this.waiters, [waiter]);
      }
    }

    closeWriting() {
      this.finWaiter = deferred();
      this.postStream({ op: 'shutdown', sid: this.sid, abort: false });
      return this.finWaiter.promise;
    }

    onFinSent() {
      this.writableDone = true;
      const waiter = this.finWaiter;
      this.finWaiter = null;
      if (waiter) waiter.resolve();
    }

    abortWriting() {
      if (this.writableDone || this.state !== 'open') return;
      this.writableDone = true;
      this.postStream({ op: 'shutdown', sid: this.sid, abort: true });
      this.rejectWaiters(domError('AbortError', 'Stream closed.'));
    }

    /** The page broke the writable's contract (a bad chunk): it errors, the host ends writing. */
    writeError(error) {
      if (!this.firstError) this.firstError = error;
      if (!this.writableDone && this.state === 'open') {
        this.writableDone = true;
        this.postStream({ op: 'shutdown', sid: this.sid, abort: true });
      }
      return error;
    }

    rejectWaiters(error) {
      for (const waiter of this.waiters) waiter.reject(error);
      this.waiters = [];
      if (this.finWaiter) this.finWaiter.reject(error);
      this.finWaiter = null;
    }

    // ending

    onClosed() {
      if (this.state === 'ended') return;
      this.state = 'ended';
      apply(mapDelete, sockets, [this.sid]);
      this.wakePull();
      if (this.firstError) this.closed.reject(this.firstError);
      else this.closed.resolve(undefined);
    }

    fail(error) {
      if (this.state === 'ended') return;
      const wasOpening = this.state === 'opening';
      this.state = 'ended';
      apply(mapDelete, sockets, [this.sid]);
      if (!this.firstError) this.firstError = error;
      if (wasOpening) {
        this.opened.reject(error);
      } else {
        if (!this.readableDone) {
          this.readableDone = true;
          try { this.readController.error(error); } catch { /* already closed */ }
        }
        if (!this.writableDone && this.writeController) {
          this.writableDone = true;
          try { this.writeController.error(error); } catch { /* already errored */ }
        }
        this.rejectWaiters(error);
        this.wakePull();
        this.onFailed(error);
      }
      this.closed.reject(this.firstError);
    }

    onFailed() {}

    /** socket.close(), the same for every interface. */
    close() {
      const info = this.info;
      if (info === null) {
        // opened is pending or rejected
        return PromiseCtor.reject(domError('InvalidStateError', 'Socket is not properly initialized.'));
      }
      if (this.state === 'ended') return this.closed.promise;
      if (info.readable.locked || (info.writable && info.writable.locked)) {
        return PromiseCtor.reject(domError('InvalidStateError', 'Close called on a socket with locked streams.'));
      }
      const reason = domError('AbortError', 'Stream closed.');
      markHandled(info.readable.cancel(reason));
      if (info.writable) markHandled(info.writable.abort(reason));
      return this.closed.promise;
    }
  }

  // -- TCP ----------------------------------------------------------------------------------------

  class TcpSocketCore extends SocketCore {
    /** @param {number} [sid] */
    constructor(sid = undefined) {
      super(sid);
      this.credit = 0; // bytes the host may still deliver
      this.sentTotal = 0;
      this.ackedTotal = 0;
      this.starttls = null; // TLS options for startTls() when opened with secureTransport "starttls"
      this.channel = 'native'; // where the stream goes: 'native', 'pending' (attaching) or 'frame'
      /** @type {Array<[any, any]>} */
      this.held = []; // the stream's messages while the WebSocket attaches
      this.bulkTimer = 0;
      /** @type {WebSocket | null} */
      this.ws = null; // the page's own WebSocket, when the stream took that way
      this.sendWindow = 0; // the host's, once opened
      this.receiveWindow = 0;
      this.bulkWindow = 0; // the send window the host allows once the WebSocket attached
      /** @type {Uint8Array[]} */
      this.gathered = []; // writes of this task waiting to go to the frame as one message
      this.gatheredBytes = 0;
      /** @type {Uint8Array | null} */
      this.gatherBuffer = null; // the same on the page's own WebSocket, copied here, reused
      this.gatherFill = 0;
      this.flushQueued = false;
    }

    postStream(message, transfer) {
      if (this.channel === 'pending') apply(arrayPush, this.held, [[message, transfer]]);
      else if (message.op === 'send' && (this.channel === 'direct' || this.channel === 'frame')) this.gather(new Uint8ArrayCtor(message.buf));
      else if (this.gathered.length || this.gatherFill) {
        this.flushGathered(); // what was written goes before what follows it
        this.postStream(message, transfer);
      } else if (this.channel === 'direct') directPost(this.ws, message, transfer);
      else if (this.channel === 'frame') framePost(message, transfer);
      else post(message, transfer);
    }

    /**
     * The host offered this socket a WebSocket: the page's own where it may have one, else
     * the extension's bulk frame; native messaging when neither attaches.
     */
    offerBulk(offer) {
      if (!offer || typeof offer.url !== 'string' || typeof offer.token !== 'string') {
        post({ op: 'bulk_declined', sid: this.sid, reason: 'no-frame' });
        return;
      }
      this.channel = 'pending';
      const window = offer.window;
      this.bulkWindow = NumberCtor.isSafeInteger(window) && window >= limits.sendWindow && window <= limits.maxBulkSendWindow ? window : limits.sendWindow;
      const none = () => this.bulkFailed('no-frame');
      // A worker in Firefox takes the host's frame first: its own WebSocket stalls with its page.
      if (worker && hostFrame) this.tryFrame(offer, () => this.tryDirect(offer, none));
      else this.tryDirect(offer, () => this.tryFrame(offer, none));
    }

    /** Each way gets its own time to attach: the next one starts with a fresh timer. */
    tryWay() {
      if (this.channel !== 'pending') return false;
      clearTimer(this.bulkTimer);
      this.bulkTimer = setTimer(() => this.bulkFailed('timeout'), BULK_ATTACH_MS);
      return true;
    }

    tryDirect(offer, next) {
      if (!this.tryWay()) return;
      if (bulkDirectFirst && !directRefused) openDirect(this, offer, (ws) => this.bulkAttached('direct', ws), next);
      else next();
    }

    tryFrame(offer, next) {
      if (!this.tryWay()) return;
      whenFrameReady(() => framePost({ op: 'attach', sid: this.sid, url: offer.url, token: offer.token, frame: offer.frame }), next, offer.frame);
    }

    bulkAttached(via, ws) {
      if (this.channel !== 'pending') {
        if (ws) apply(wsClose, ws, []);
        return;
      }
      clearTimer(this.bulkTimer);
      this.channel = via;
      this.ws = ws;
      this.sendWindow = this.bulkWindow;
      this.flushHeld();
    }

    bulkFailed(reason) {
      if (this.channel !== 'pending') return;
      clearTimer(this.bulkTimer);
      this.channel = 'native';
      post({ op: 'bulk_declined', sid: this.sid, reason });
      this.flushHeld();
    }

    /**
     * Bytes for the WebSocket: the first write of a task goes at once (a lone message loses
     * no time); the ones after it in the same task are sent together when the task ends, as
     * one frame, sparing the host and the browser a message each (docs/BULK.md, measured).
     * On the page's own WebSocket, which copies what it is given at once, `bytes` may be the
     * page's memory and is never kept; towards the frame it is our own copy, and moves there.
     * @param {Uint8Array} bytes
     */
    gather(bytes) {
      // Small writes of one task go together up to half a write's most, and never above the
      // message size that suits this browser.
      const limit = MathObj.min(limits.bulkChunk / 2, bulkMessageSize);
      if (!this.flushQueued) {
        this.flushQueued = true;
        afterTask(() => this.flushGathered(true));
        this.sendFrame(bytes);
        return;
      }
      const size = bytes.byteLength;
      if (this.channel === 'direct') {
        if (size >= limit / 2) {
          this.flushGathered(); // what was gathered goes first
          this.sendFrame(bytes);
          return;
        }
        if (this.gatherFill + size > limit) this.flushGathered();
        if (this.gatherBuffer === null || this.gatherBuffer.length < limit) this.gatherBuffer = new Uint8ArrayCtor(limit);
        apply(u8Set, this.gatherBuffer, [bytes, this.gatherFill]);
        this.gatherFill += size;
        return;
      }
      apply(arrayPush, this.gathered, [bytes]);
      this.gatheredBytes += size;
      if (this.gatheredBytes >= limit) this.flushGathered();
    }

    /** Sends what was gathered; at the end of a task, the next write goes at once again. */
    flushGathered(endOfTask = false) {
      if (endOfTask) this.flushQueued = false;
      if (this.gatherFill > 0) {
        const fill = this.gatherFill;
        this.gatherFill = 0;
        this.sendFrame(apply(u8Subarray, this.gatherBuffer, [0, fill])); // copied by the WebSocket at once
        return;
      }
      const parts = this.gathered;
      if (parts.length === 0) return;
      this.gathered = [];
      const size = this.gatheredBytes;
      this.gatheredBytes = 0;
      if (parts.length === 1) {
        this.sendFrame(parts[0]);
        return;
      }
      const joined = new Uint8ArrayCtor(size);
      let offset = 0;
      for (const part of parts) {
        apply(u8Set, joined, [part, offset]);
        offset += part.byteLength;
      }
      this.sendFrame(joined);
    }

    /** @param {Uint8Array} bytes */
    sendFrame(bytes) {
      if (this.channel === 'direct') {
        const size = bytes.byteLength;
        if (size <= bulkMessageSize) apply(wsSend, this.ws, [bytes]);
        else for (let at = 0; at < size; at += bulkMessageSize) apply(wsSend, this.ws, [apply(u8Subarray, bytes, [at, at + bulkMessageSize])]);
        return;
      }
      // Towards the frame the buffer moves: it is our own, and holds exactly these bytes.
      const buf = bytes.buffer;
      framePost({ op: 'send', sid: this.sid, buf }, [buf]);
    }

    flushHeld() {
      const held = this.held;
      this.held = [];
      for (const [message, transfer] of held) this.postStream(message, transfer);
    }

    /**
     * STARTTLS: the connection continues, secured, as a new socket; this one ends. Bytes this
     * socket received stay readable here, labelled plaintext; nothing that arrives after the
     * upgrade is ever delivered as if it came over TLS (docs/TLS.md).
     * @param {Record<string, any>} options @returns {TcpSocketCore}
     */
    startTls(options) {
      if (this.starttls === null || this.state !== 'open' || this.readableDone || this.writableDone) {
        throw domError('InvalidStateError', 'startTls() needs an open socket made with secureTransport "starttls", used once.');
      }
      const tls = { ...this.starttls, ...options };
      this.starttls = null;
      const secured = new TcpSocketCore();
      // Writes the page already made go first, in plain text, as it meant them to.
      markHandled(this.acked(this.ackedTotal, this.sentTotal).then(() => {
        if (this.state !== 'open') {
          secured.fail(this.firstError ?? domError('InvalidStateError', 'The socket closed before startTls().'));
          return;
        }
        post({ op: 'start_tls', sid: this.sid, newSid: secured.sid, options: tls });
        this.upgraded();
      }, (error) => secured.fail(error)));
      return secured;
    }

    upgraded() {
      this.state = 'ended';
      apply(mapDelete, sockets, [this.sid]);
      this.readableDone = true;
      try { this.readController.close(); } catch { /* already closed */ }
      const request = this.readController.byobRequest;
      if (request) request.respond(0);
      this.writableDone = true;
      const error = domError('InvalidStateError', 'The socket continues as the one startTls() returned.');
      try { this.writeController.error(error); } catch { /* already errored */ }
      this.rejectWaiters(error);
      this.wakePull();
      this.closed.resolve(undefined);
    }

    onOpened(message) {
      this.sendWindow = limits.sendWindow;
      this.receiveWindow = message.bulk ? limits.bulkReceiveWindow : limits.receiveWindow; // granted the same way on either path
      const readable = this.newReadable(this.receiveWindow, 'bytes');
      const writable = this.newWritable();
      const info = {
        readable, writable,
        remoteAddress: message.remoteAddress, remotePort: message.remotePort,
        localAddress: message.localAddress, localPort: message.localPort,
      };
      if (message.tls) info.tls = deepFreeze(message.tls);
      if (message.bulk) this.offerBulk(message.bulk); // before the first pull asks for credit
      this.resolveOpened(info);
    }

    pull(controller) {
      if (this.readableDone || this.state !== 'open') return undefined;
      const request = controller.byobRequest;
      const want = MathObj.max(controller.desiredSize || 0, request && request.view ? request.view.byteLength : 0);
      const grant = MathObj.min(want, this.receiveWindow) - this.credit;
      // Grant in large steps (or when nothing is granted at all): fewer messages to the host.
      if (grant > 0 && (this.credit === 0 || grant >= this.receiveWindow / 4)) {
        this.credit += grant;
        this.postStream({ op: 'read', sid: this.sid, bytes: grant });
      }
      return this.waitForArrival();
    }

    onData(message) {
      switch (message.op) {
        case 'data': {
          if (this.readableDone) return;
          const bytes = new Uint8ArrayCtor(message.buf);
          this.credit -= bytes.byteLength;
          this.readController.enqueue(bytes);
          this.wakePull();
          return;
        }
        case 'eof': {
          if (this.readableDone) return;
          this.readableDone = true;
          const controller = this.readController;
          controller.close();
          const request = controller.byobRequest;
          if (request) request.respond(0);
          this.wakePull();
          return;
        }
        case 'ack':
          this.ackedTotal += message.bytes;
          this.wakeWriters(this.ackedTotal);
      }
    }

    write(chunk) {
      if (this.channel === 'direct' && !this.firstError) {
        // The page's own WebSocket copies what it is given at once, so a write that may go now
        // goes from the page's memory, with no copy of ours first (docs/BULK.md, measured).
        const view = viewBufferSource(chunk);
        const size = view === null ? 0 : view.byteLength;
        if (size > 0 && size <= limits.bulkChunk && this.ackedTotal >= this.sentTotal + size - this.sendWindow) {
          this.sentTotal += size;
          this.gather(view);
          return undefined;
        }
      }
      const bytes = copyBufferSource(chunk);
      if (bytes === null) throw this.writeError(new TypeErrorCtor('The chunk is not an ArrayBuffer or ArrayBufferView.'));
      if (bytes.byteLength === 0) return undefined;
      return this.sendBytes(bytes);
    }

    async sendBytes(bytes) {
      // On the bulk path a message may carry twice as much (no native messaging limit).
      const chunk = this.channel === 'direct' || this.channel === 'frame' ? limits.bulkChunk : limits.maxChunk;
      for (let offset = 0; offset < bytes.byteLength; offset += chunk) {
        // `bytes` is already our own copy: a write that fits one message goes as it is.
        const piece = bytes.byteLength <= chunk ? bytes : apply(u8Slice, bytes, [offset, offset + chunk]);
        // Never more than the window unacknowledged: the host refuses more, memory stays flat.
        await this.acked(this.ackedTotal, this.sentTotal + piece.byteLength - this.sendWindow);
        this.sentTotal += piece.byteLength;
        this.postStream({ op: 'send', sid: this.sid, buf: piece.buffer }, [piece.buffer]);
      }
      // The write resolves once its bytes are with the host, inside the send window (as
      // Chrome's resolves once they are in its data pipe): waiting for each acknowledgement
      // would cost a round trip per write. A later failure errors the writable.
    }
  }

  // -- UDP ----------------------------------------------------------------------------------------

  /** UDPMessage, members in lexicographic order; the checks depend on the socket's mode. */
  function convertUdpMessage(value, bound) {
    if (value === undefined || value === null || (typeof value !== 'object' && typeof value !== 'function')) {
      throw new TypeErrorCtor('A UDPMessage must be an object.');
    }
    const data = value.data;
    const dnsQueryType = value.dnsQueryType === undefined ? undefined : toEnum(value.dnsQueryType, DNS_QUERY_TYPES, 'dnsQueryType');
    const remoteAddress = value.remoteAddress === undefined ? undefined : toDOMString(value.remoteAddress, 'remoteAddress');
    const remotePort = value.remotePort === undefined ? undefined : enforceRange(value.remotePort, 65535, 'remotePort');
    const bytes = data === undefined ? null : copyBufferSource(data);
    if (bytes === null) throw new TypeErrorCtor('UDPMessage: data must be an ArrayBuffer or ArrayBufferView.');
    if (bytes.byteLength > limits.maxDatagram) throw new TypeErrorCtor(`UDPMessage: data exceeds ${limits.maxDatagram} bytes.`);
    if (!bound) {
      if (remoteAddress !== undefined || remotePort !== undefined || dnsQueryType !== undefined) {
        throw new TypeErrorCtor('UDPMessage: a connected socket sends to its remote end; remoteAddress, remotePort and dnsQueryType are not allowed.');
      }
      return { bytes };
    }
    if (remoteAddress === undefined || remotePort === undefined) {
      throw new TypeErrorCtor('UDPMessage: a bound socket needs remoteAddress and remotePort.');
    }
    if (remoteAddress.length === 0 || remoteAddress.length > 253) throw new TypeErrorCtor('UDPMessage: remoteAddress is not a valid host.');
    return { bytes, remoteAddress, remotePort, dnsQueryType };
  }

  class UdpSocketCore extends SocketCore {
    constructor(bound) {
      super();
      this.bound = bound;
      this.credit = 0; // datagrams the host may still deliver
      this.sentCount = 0;
      this.ackedCount = 0;
      this.multicast = null;
    }

    onOpened(message) {
      const readable = this.newReadable(limits.udpReceiveWindow);
      const writable = this.newWritable();
      const info = { readable, writable };
      if (!this.bound) {
        info.remoteAddress = message.remoteAddress;
        info.remotePort = message.remotePort;
      }
      info.localAddress = message.localAddress;
      info.localPort = message.localPort;
      if (this.bound) {
        this.multicast = new MulticastController(ADOPT, this);
        info.multicastController = this.multicast;
      }
      this.resolveOpened(info);
    }

    pull(controller) {
      if (this.readableDone || this.state !== 'open') return undefined;
      const grant = (controller.desiredSize || 0) - this.credit;
      if (grant > 0 && (this.credit === 0 || grant >= limits.udpReceiveWindow / 4)) {
        this.credit += grant;
        post({ op: 'udp_read', sid: this.sid, datagrams: grant });
      }
      return this.waitForArrival();
    }

    onData(message) {
      switch (message.op) {
        case 'datagram': {
          if (this.readableDone) return;
          this.credit -= 1;
          const received = { data: new Uint8ArrayCtor(message.buf) };
          if (this.bound) {
            received.remoteAddress = message.remoteAddress;
            received.remotePort = message.remotePort;
          }
          this.readController.enqueue(received);
          this.wakePull();
          return;
        }
        case 'udp_ack':
          this.ackedCount += message.datagrams;
          this.wakeWriters(this.ackedCount);
          return;
        case 'write_failed': {
          // The host refused or failed a send: the writable errors, reading goes on.
          const error = domError(message.name, message.message);
          if (!this.firstError) this.firstError = error;
          this.writableDone = true;
          try { this.writeController.error(error); } catch { /* already errored */ }
          this.rejectWaiters(error);
          return;
        }
        case 'done':
        case 'request_failed':
          if (this.multicast) settleMulticast(this.multicast, message);
      }
    }

    async write(value) {
      let message;
      try {
        message = convertUdpMessage(value, this.bound);
      } catch (error) {
        throw this.writeError(error);
      }
      await this.acked(this.ackedCount, this.sentCount + 1 - limits.udpSendWindow);
      this.sentCount += 1;
      const out = { op: 'udp_send', sid: this.sid, buf: message.bytes.buffer };
      if (this.bound) {
        out.remoteAddress = message.remoteAddress;
        out.remotePort = message.remotePort;
        if (message.dnsQueryType !== undefined) out.dnsQueryType = message.dnsQueryType;
      }
      post(out, [message.bytes.buffer]);
      await this.acked(this.ackedCount, this.sentCount);
    }

    onFailed() {
      if (this.multicast) endMulticast(this.multicast);
    }
  }

  // -- multicast ------------------------------------------------------------------------------------

  /** @type {(controller: MulticastController, message: any) => void} */
  let settleMulticast;
  /** @type {(controller: MulticastController) => void} */
  let endMulticast;

  class MulticastController {
    #core;
    /** @type {Array<{key: string, entry: string | {groupAddress: string, sourceAddress: string}}>} */
    #joined = [];
    #pending = new MapCtor(); // req -> {join, key, entry, resolve, reject}
    #busy = new SetCtor(); // keys being joined or left
    #nextReq = 1;
    #cachedList = null;

    constructor(token, core) {
      if (token !== ADOPT) throw new TypeErrorCtor('Illegal constructor');
      this.#core = core;
    }

    static #of(self) {
      return self !== null && typeof self === 'object' && #core in self ? self : null;
    }

    #request(join, groupAddress, options) {
      const group = parseIp(toDOMString(groupAddress, 'groupAddress'));
      if (group === null || !group.multicast) return PromiseCtor.reject(new TypeErrorCtor(`${groupAddress} is not a multicast group address.`));
      const opts = toDictionary(options, 'MulticastGroupOptions');
      let source = null;
      if (opts.sourceAddress !== undefined) {
        source = parseIp(toDOMString(opts.sourceAddress, 'sourceAddress'));
        if (source === null || source.multicast || source.loopback || source.unspecified || source.version !== group.version) {
          return PromiseCtor.reject(new TypeErrorCtor(`${opts.sourceAddress} is not a valid source address for ${groupAddress}.`));
        }
      }
      const key = source ? `${group.text} ${source.text}` : group.text;
      const core = this.#core;
      if (core.state !== 'open') return PromiseCtor.reject(domError('InvalidStateError', 'The socket is closed.'));
      const joined = apply(arrayFilter, this.#joined, [(item) => item.key === key]).length > 0;
      if (apply(setHas, this.#busy, [key]) || joined === join) {
        return PromiseCtor.reject(domError('InvalidStateError', join ? 'Already joined or joining this group.' : 'Not a member of this group.'));
      }
      const req = this.#nextReq++;
      const done = deferred();
      const entry = source ? freeze({ groupAddress: group.text, sourceAddress: source.text }) : group.text;
      apply(mapSet, this.#pending, [req, { join, key, entry, resolve: done.resolve, reject: done.reject }]);
      apply(setAdd, this.#busy, [key]);
      const message = { op: join ? 'join' : 'leave', sid: core.sid, req, groupAddress: group.text };
      if (source) message.sourceAddress = source.text;
      post(message);
      return done.promise;
    }

    // What the socket tells its controller: private, so that pages see only the draft's members.
    static {
      settleMulticast = (controller, message) => controller.#settle(message);
      endMulticast = (controller) => controller.#socketEnded();
    }

    #settle(message) {
      const pending = apply(mapGet, this.#pending, [message.req]);
      if (!pending) return;
      apply(mapDelete, this.#pending, [message.req]);
      apply(setDelete, this.#busy, [pending.key]);
      if (message.op === 'request_failed') {
        pending.reject(message.name === 'TypeError' ? new TypeErrorCtor(message.message) : domError(message.name, message.message));
        return;
      }
      if (pending.join) apply(arrayPush, this.#joined, [{ key: pending.key, entry: pending.entry }]);
      else this.#joined = apply(arrayFilter, this.#joined, [(item) => item.key !== pending.key]);
      this.#cachedList = null;
      pending.resolve(undefined);
    }

    #socketEnded() {
      const error = domError('InvalidStateError', 'The socket is closed.');
      apply(mapForEach, this.#pending, [(pending) => pending.reject(error)]);
      this.#pending = new MapCtor();
      this.#busy = new SetCtor();
    }

    /** joinGroup() and leaveGroup(): `this` and the arguments checked, then the request. */
    static #membership(self, join, argumentCount, groupAddress, options) {
      const controller = MulticastController.#of(self);
      if (!controller) return PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
      if (argumentCount < 1) return PromiseCtor.reject(new TypeErrorCtor('1 argument required.'));
      try {
        return controller.#request(join, groupAddress, options);
      } catch (error) {
        return PromiseCtor.reject(error);
      }
    }

    joinGroup(groupAddress, options = undefined) {
      return MulticastController.#membership(this, true, arguments.length, groupAddress, options);
    }

    leaveGroup(groupAddress, options = undefined) {
      return MulticastController.#membership(this, false, arguments.length, groupAddress, options);
    }

    /** A FrozenArray: the same object until the memberships change. */
    get joinedGroups() {
      const self = MulticastController.#of(this);
      if (!self) throw new TypeErrorCtor('Illegal invocation');
      if (self.#cachedList === null) self.#cachedList = freeze(apply(arrayMap, self.#joined, [(item) => item.entry]));
      return self.#cachedList;
    }
  }

  // -- listening ----------------------------------------------------------------------------------

  class ServerSocketCore extends SocketCore {
    constructor() {
      super();
      this.awaitingAccept = 0; // accepts asked of the host and not yet answered
    }

    onOpened(message) {
      const readable = this.newReadable(limits.acceptWindow);
      this.writableDone = true; // a server has no writable
      const info = { readable, localAddress: message.localAddress, localPort: message.localPort };
      if (message.tls) info.tls = deepFreeze(message.tls);
      this.resolveOpened(info);
    }

    pull(controller) {
      if (this.readableDone || this.state !== 'open') return undefined;
      // One id per connection, chosen here: the accepted socket's messages come under it.
      while (this.awaitingAccept < MathObj.max(controller.desiredSize || 0, 1) && this.awaitingAccept < limits.acceptWindow) {
        this.awaitingAccept += 1;
        post({ op: 'accept', sid: this.sid, newSid: nextSid++ });
      }
      return this.waitForArrival();
    }

    onData(message) {
      if (message.op !== 'accepted' || this.readableDone) return;
      this.awaitingAccept -= 1;
      const core = new TcpSocketCore(message.newSid);
      core.onOpened(message);
      this.readController.enqueue(new TCPSocket(ADOPT, core));
      this.wakePull();
    }
  }

  // -- the interfaces -----------------------------------------------------------------------------

  /** The getters and close() of every socket interface: the core does the work. */
  function socketMembers(coreOf) {
    return {
      // Promise-typed members reject, rather than throw, on a wrong `this` (WebIDL).
      opened: function opened() {
        const core = coreOf(this);
        return core ? core.opened.promise : PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
      },
      closed: function closed() {
        const core = coreOf(this);
        return core ? core.closed.promise : PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
      },
      close: function close() {
        const core = coreOf(this);
        return core ? core.close() : PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
      },
    };
  }

  function notAllowedUnlessPermitted(what) {
    if (policyForbidden || !documentAllowed()) {
      throw domError('NotAllowedError', `Failed to construct '${what}': Permissions-Policy: direct-sockets is disabled.`);
    }
  }

  function checkBufferSizes(options, what) {
    if (options.sendBufferSize === 0) throw new TypeErrorCtor(`Failed to construct '${what}': sendBufferSize must be greater than zero.`);
    if (options.receiveBufferSize === 0) throw new TypeErrorCtor(`Failed to construct '${what}': receiveBufferSize must be greater than zero.`);
  }

  class TCPSocket {
    /** @type {TcpSocketCore} */
    #core;

    static coreOf(self) {
      return self !== null && typeof self === 'object' && #core in self ? self.#core : null;
    }

    constructor(remoteAddress, remotePort, options = undefined) {
      if (remoteAddress === ADOPT && remotePort instanceof TcpSocketCore) {
        this.#core = remotePort; // a connection a TCPServerSocket accepted
        return;
      }
      if (arguments.length < 2) {
        throw new TypeErrorCtor(`Failed to construct 'TCPSocket': 2 arguments required, but only ${arguments.length} present.`);
      }
      const address = toDOMString(remoteAddress, 'remoteAddress');
      const port = wrapUnsignedShort(remotePort, 'remotePort');
      const opts = convertTcpOptions(options);
      notAllowedUnlessPermitted('TCPSocket');
      if (opts.keepAliveDelay !== undefined && opts.keepAliveDelay < 1000) {
        throw new TypeErrorCtor("Failed to construct 'TCPSocket': keepAliveDelay must be no less than 1000 milliseconds.");
      }
      checkBufferSizes(opts, 'TCPSocket');
      const secure = opts.secureTransport ?? 'off';
      const tls = {};
      for (const name of TLS_MEMBERS) {
        if (opts[name] === undefined) continue;
        if (secure === 'off') throw new TypeErrorCtor(`Failed to construct 'TCPSocket': ${name} needs secureTransport "on" or "starttls".`);
        tls[name] = opts[name];
        if (secure === 'starttls') delete opts[name]; // for startTls(), which may add to them
      }
      if (secure === 'off') delete opts.secureTransport;
      this.#core = new TcpSocketCore();
      if (secure === 'starttls') this.#core.starttls = tls;
      // An address no resolver accepts fails as a resolution would, without asking anyone.
      this.#core.request({ kind: 'tcp', remoteAddress: address, remotePort: port, options: opts },
        address.length > 0 && address.length <= 253);
    }

    /**
     * Upgrades a socket opened with secureTransport "starttls" after its plain-text dialogue
     * (an SMTP or IMAP "STARTTLS"). Returns the secured connection as a new TCPSocket, as
     * Cloudflare's sockets API does; this one closes.
     * @param {any} [options] TLSOptions: alpn, caCertificates, pinnedCertificates, serverName
     */
    startTls(options = undefined) {
      if (this === null || typeof this !== 'object' || !(#core in this)) throw new TypeErrorCtor('Illegal invocation');
      const tls = convertTlsOptions(options);
      return new TCPSocket(ADOPT, this.#core.startTls(tls));
    }
  }

  class UDPSocket {
    /** @type {UdpSocketCore} */
    #core;

    static coreOf(self) {
      return self !== null && typeof self === 'object' && #core in self ? self.#core : null;
    }

    constructor(options = undefined) {
      const opts = convertUdpOptions(options);
      notAllowedUnlessPermitted('UDPSocket');
      const fail = (text) => { throw new TypeErrorCtor(`Failed to construct 'UDPSocket': ${text}`); };
      checkBufferSizes(opts, 'UDPSocket');
      const hasRemote = opts.remoteAddress !== undefined || opts.remotePort !== undefined;
      if (hasRemote && (opts.remoteAddress === undefined || opts.remotePort === undefined)) {
        fail('remoteAddress and remotePort should either be specified together or not specified at all.');
      }
      if (opts.localPort !== undefined && opts.localAddress === undefined) fail('localPort needs localAddress.');
      if (hasRemote && opts.localAddress !== undefined) fail('remoteAddress and localAddress cannot both be given.');
      if (!hasRemote && opts.localAddress === undefined) fail('either remoteAddress and remotePort, or localAddress, must be given.');
      const message = { kind: 'udp', options: {} };
      for (const name of ['sendBufferSize', 'receiveBufferSize', 'multicastTimeToLive', 'multicastLoopback', 'multicastAllowAddressSharing']) {
        if (opts[name] !== undefined) message.options[name] = opts[name];
      }
      let valid = true;
      if (hasRemote) {
        message.mode = 'connected';
        message.remoteAddress = opts.remoteAddress;
        message.remotePort = opts.remotePort;
        if (opts.dnsQueryType !== undefined) message.options.dnsQueryType = opts.dnsQueryType;
        if (opts.ipv6Only !== undefined) fail('ipv6Only is only for a socket bound to ::.');
        valid = opts.remoteAddress.length > 0 && opts.remoteAddress.length <= 253;
      } else {
        const local = parseIp(opts.localAddress);
        if (local === null) fail('localAddress must be an IP address.');
        if (opts.localPort === 0) fail('localPort must not be 0; leave it out for any port.');
        if (opts.dnsQueryType !== undefined) fail('dnsQueryType is not allowed for a bound socket.');
        if (opts.ipv6Only !== undefined && !(local.version === 6 && local.unspecified)) fail('ipv6Only is only for a socket bound to ::.');
        if (opts.ipv6Only !== undefined) message.options.ipv6Only = opts.ipv6Only;
        message.mode = 'bound';
        message.localAddress = local.text;
        if (opts.localPort !== undefined) message.localPort = opts.localPort;
      }
      this.#core = new UdpSocketCore(!hasRemote);
      this.#core.request(message, valid);
    }
  }

  class TCPServerSocket {
    /** @type {ServerSocketCore} */
    #core;

    static coreOf(self) {
      return self !== null && typeof self === 'object' && #core in self ? self.#core : null;
    }

    constructor(localAddress, options = undefined) {
      if (arguments.length < 1) throw new TypeErrorCtor("Failed to construct 'TCPServerSocket': 1 argument required, but only 0 present.");
      const address = toDOMString(localAddress, 'localAddress');
      const opts = convertServerOptions(options);
      notAllowedUnlessPermitted('TCPServerSocket');
      const fail = (text) => { throw new TypeErrorCtor(`Failed to construct 'TCPServerSocket': ${text}`); };
      const local = parseIp(address);
      if (local === null) fail('localAddress must be an IP address.');
      if (opts.localPort === 0) fail('localPort must not be 0; leave it out for any port.');
      if (opts.backlog === 0) fail('backlog must be greater than zero.');
      if (opts.ipv6Only === true && !(local.version === 6 && local.unspecified)) fail('ipv6Only is only for a socket bound to ::.');
      this.#core = new ServerSocketCore();
      const message = { kind: 'listen', localAddress: local.text };
      if (opts.localPort !== undefined) message.localPort = opts.localPort;
      if (opts.backlog !== undefined) message.backlog = opts.backlog;
      if (opts.ipv6Only !== undefined) message.ipv6Only = opts.ipv6Only;
      if (opts.secureTransport === 'on') message.secureTransport = 'on';
      this.#core.request(message);
    }
  }

  // WebIDL shape: attributes are enumerable accessors on the prototype, operations enumerable
  // methods; interfaces carry their tag; the coreOf helpers are not visible to pages.
  /** @param {any} Interface */
  function expose(Interface, name) {
    const members = socketMembers(Interface.coreOf);
    delete Interface.coreOf;
    ObjectCtor.defineProperties(Interface.prototype, {
      opened: { get: members.opened, enumerable: true, configurable: true },
      closed: { get: members.closed, enumerable: true, configurable: true },
      close: { value: members.close, enumerable: true, configurable: true, writable: true },
      [SymbolCtor.toStringTag]: { value: name, configurable: true },
    });
    ObjectCtor.defineProperty(globalThis, name, { value: Interface, writable: true, configurable: true, enumerable: false });
  }
  expose(TCPSocket, 'TCPSocket');
  ObjectCtor.defineProperty(TCPSocket.prototype, 'startTls', { ...ObjectCtor.getOwnPropertyDescriptor(TCPSocket.prototype, 'startTls'), enumerable: true });
  expose(UDPSocket, 'UDPSocket');
  expose(TCPServerSocket, 'TCPServerSocket');

  for (const name of ['joinGroup', 'leaveGroup']) {
    const descriptor = ObjectCtor.getOwnPropertyDescriptor(MulticastController.prototype, name);
    descriptor.enumerable = true;
    ObjectCtor.defineProperty(MulticastController.prototype, name, descriptor);
  }
  const joined = ObjectCtor.getOwnPropertyDescriptor(MulticastController.prototype, 'joinedGroups');
  joined.enumerable = true;
  ObjectCtor.defineProperty(MulticastController.prototype, 'joinedGroups', joined);
  ObjectCtor.defineProperty(MulticastController.prototype, SymbolCtor.toStringTag, { value: 'MulticastController', configurable: true });
  ObjectCtor.defineProperty(globalThis, 'MulticastController', { value: MulticastController, writable: true, configurable: true, enumerable: false });

  // -- dedicated workers (docs/API.md, "Workers") ------------------------------------------------
  // A worker this realm starts gets the same API. Our `Worker` starts a blob that first runs this
  // very function (its source, serialized: one implementation), then the real script. The
  // worker's API talks over a MessagePort to this realm, which relays it on its own channel, so
  // the worker's sockets are this page's: the background learns who asks from the browser, never
  // from what the worker sends. Ids are translated both ways: a worker names only its own sockets.
  // Its TCP bytes take its own WebSocket, or its own port to the bulk frame, and so never wait
  // for this realm's thread; everything else is relayed here.

  const NativeWorker = typeof globalThis.Worker === 'function' ? globalThis.Worker : null;
  const BlobCtor = globalThis.Blob;
  const ProxyCtor = Proxy;
  const WeakMapCtor = WeakMap;
  const weakGet = WeakMapCtor.prototype.get;
  const weakSet = WeakMapCtor.prototype.set;
  const mapHas = MapCtor.prototype.has;
  const arrayShift = ArrayCtor.prototype.shift;
  const createObjectURL = URLCtor.createObjectURL;
  const revokeObjectURL = URLCtor.revokeObjectURL;
  const construct = ReflectObj.construct;
  const fnToString = Function.prototype.toString;
  const getEventPorts = ObjectCtor.getOwnPropertyDescriptor(MessageEventCtor.prototype, 'ports').get;
  const stopImmediate = Event.prototype.stopImmediatePropagation;
  const EventCtor = Event;
  const ErrorEventCtor = ErrorEvent;
  const portStart = MessagePort.prototype.start;
  const portClose = MessagePort.prototype.close;
  const getHref = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'href').get;
  const getProtocol = ObjectCtor.getOwnPropertyDescriptor(URLCtor.prototype, 'protocol').get;
  const getBaseURI = worker ? null : ObjectCtor.getOwnPropertyDescriptor(Node.prototype, 'baseURI').get;
  const ownOrigin = globalThis.origin;
  /** @type {WeakMap<Worker, WorkerRelay>} */
  const workerRelays = new WeakMapCtor();
  /** Relays of workers still running, for the bridge's late configuration. */
  const liveRelays = new SetCtor();
  /** Callbacks waiting for a port to the bulk frame, asked of the realm that started us. */
  let frameRequests = [];

  /** In a worker: says hello to the realm that started it, handing it our end of the channel. */
  function workerHandOver(theirs) {
    apply(windowPost, globalThis, [WORKER_HELLO, [theirs]]);
    worker.signal = (op, fields) => post({ ...fields, op }); // for workerMain, below
    const nativeClose = globalThis.close;
    // A worker that closes itself tells its page first: its sockets close in the host.
    ObjectCtor.defineProperty(globalThis, 'close', {
      value: { close() { post({ op: 'worker-closing' }); return apply(nativeClose, globalThis, []); } }.close,
      writable: true, enumerable: true, configurable: true,
    });
    return true;
  }

  /**
   * A new port to the bulk frame, for a worker (ours in a worker, a child's in the page), or
   * null when there is none to be had. `hostFrameUrl`: the host's frame, from the offer.
   */
  function newFramePort(callback, hostFrameUrl) {
    if (worker) {
      apply(arrayPush, frameRequests, [callback]);
      post({ op: 'frame-port', url: hostFrameUrl });
      return;
    }
    whenFrameReady(() => {
      const framed = new MessageChannelCtor();
      apply(windowPost, frameWindow, ['direct-sockets-bulk', frameWindowOrigin, [framed.port2]]);
      callback(framed.port1);
    }, () => callback(null), hostFrameUrl);
  }

  function framePortArrived(framed) {
    const callback = apply(arrayShift, frameRequests, []);
    if (callback) callback(framed || null);
  }

  /** What a worker learns: of the bulk path, never the extension frame's URL, only whether
   * there is one (the host's frame it learns from each socket's offer), nor to try its own
   * WebSocket where ours was refused (the same process, the same delays); the host's limits,
   * as they came here. */
  function workerConfig() {
    return {
      bulkFrame: bulkFrameUrl !== null && !hostFrame ? 'frame' : null, bulkHostFrame: hostFrame,
      bulkDirectFirst: bulkDirectFirst && !directRefused, bulkMessageSize, limits,
    };
  }

  function forwardConfig() {
    const config = { op: 'config', ...workerConfig() };
    for (const relay of liveRelays) relay.send(config);
  }

  /** One worker's side of the relay: its socket ids and ours. */
  class WorkerRelay {
    constructor() {
      /** @type {MessagePort | null} */
      this.port = null;
      this.ended = false;
      this.ours = new MapCtor(); // the worker's id -> ours
      this.loadFailed = () => {};
      this.scriptError = (_fields) => {};
      apply(setAdd, liveRelays, [this]);
    }

    attach(theirPort) {
      if (this.port || this.ended) {
        apply(portClose, theirPort, []);
        return;
      }
      this.port = theirPort;
      apply(addListener, theirPort, ['message', (event) => this.fromWorker(apply(getEventData, event, []))]);
      apply(portStart, theirPort, []);
    }

    send(message, transfer) {
      if (this.port && !this.ended) apply(portPost, this.port, [message, transfer || []]);
    }

    /** A socket id of the worker's, given one of ours that the page's channel carries. */
    adopt(theirs) {
      const ours = nextSid++;
      apply(mapSet, this.ours, [theirs, ours]);
      apply(mapSet, sockets, [ours, { channel: 'relayed', relay: this, theirs, onMessage: (m) => this.toWorker(theirs, ours, m) }]);
      return ours;
    }

    forget(theirs, ours) {
      apply(mapDelete, this.ours, [theirs]);
      apply(mapDelete, sockets, [ours]);
    }

    fromWorker(message) {
      if (this.ended || !message || typeof message !== 'object') return;
      const op = message.op;
      if (op === 'worker-closing') return this.end();
      if (op === 'load-failed') return this.loadFailed();
      if (op === 'script-error') return this.scriptError(message);
      if (op === 'frame-port') return newFramePort((framed) => this.send({ op: 'frame-port' }, framed ? [framed] : []), typeof message.url === 'string' ? message.url : '');
      const theirs = message.sid;
      if (!NumberCtor.isSafeInteger(theirs)) return undefined;
      const out = { ...message };
      if (op === 'open') {
        if (apply(mapHas, this.ours, [theirs])) return undefined;
        if (!bridged) return this.send({ op: 'error', sid: theirs, name: 'NetworkError', message: 'Network error.' });
        out.sid = this.adopt(theirs);
      } else {
        const ours = apply(mapGet, this.ours, [theirs]);
        if (ours === undefined) return undefined;
        out.sid = ours;
        if (op === 'accept' || op === 'start_tls') {
          // The accepted or secured connection's id is the worker's choice; ours is made now.
          if (!NumberCtor.isSafeInteger(message.newSid) || apply(mapHas, this.ours, [message.newSid])) return undefined;
          out.newSid = this.adopt(message.newSid);
        }
      }
      if (out.buf === undefined) return post(out);
      try {
        apply(getBufferByteLength, out.buf, []); // an ArrayBuffer of ours, as the bridge expects
      } catch {
        return undefined;
      }
      return post(out, [out.buf]);
    }

    toWorker(theirs, ours, message) {
      const out = { ...message, sid: theirs };
      if (message.op === 'accepted') {
        const accepted = apply(mapGet, sockets, [message.newSid]);
        if (!accepted || accepted.relay !== this) return;
        out.newSid = accepted.theirs;
      }
      if (message.op === 'closed' || message.op === 'error') this.forget(theirs, ours);
      this.send(out, out.buf === undefined ? [] : [out.buf]);
    }

    /** The worker is gone (terminate(), close(), a failed load): its sockets close in the host. */
    end() {
      if (this.ended) return;
      this.ended = true;
      apply(setDelete, liveRelays, [this]);
      apply(mapForEach, this.ours, [(ours) => {
        apply(mapDelete, sockets, [ours]);
        if (bridged) post({ op: 'release', sid: ours });
      }]);
      this.ours = new MapCtor();
      if (this.port) apply(portClose, this.port, []);
    }
  }

  /**
   * Whether a worker script at `url` may be started from our blob: not a `data:` URL (its worker
   * has an opaque origin, which ours would not), not another origin's script (which must fail as
   * it would), and not where the page's Content-Security-Policy refuses blob: workers.
   */
  function canWrap(url) {
    if (apply(getProtocol, url, []) === 'data:') return false;
    if (apply(getOrigin, url, []) !== ownOrigin) return false;
    return !blobWorkersRefused();
  }

  const querySelectorAll = worker ? null : Document.prototype.querySelectorAll;
  const getAttribute = worker ? null : Element.prototype.getAttribute;
  // The page's CSP headers, as the extension marked the response (background/policy.js): Firefox's
  // whole, Chromium's as a verdict ("refused").
  const headerPolicies = [];
  if (!worker) try {
    const navigation = performance.getEntriesByType('navigation')[0];
    for (const entry of navigation?.serverTiming ?? []) if (entry.name === 'direct-sockets-csp') apply(arrayPush, headerPolicies, [entry.description]);
  } catch { /* no timing: no header policy known */ }

  /** Whether a CSP (policies separated by commas) refuses a blob: worker. */
  function cspRefusesBlobWorkers(text) {
    if (text === 'refused') return true;
    for (const policy of text.split(',')) {
      const directives = new MapCtor();
      for (const part of policy.split(';')) {
        const [name, ...sources] = part.trim().split(/\s+/);
        if (name && !apply(mapHas, directives, [name.toLowerCase()])) apply(mapSet, directives, [name.toLowerCase(), sources]);
      }
      // The directive that governs workers: the first of these the policy has.
      const governing = ['worker-src', 'child-src', 'script-src', 'default-src'].map((name) => apply(mapGet, directives, [name])).find((list) => list !== undefined);
      if (governing && !governing.some((source) => source.toLowerCase() === 'blob:')) return true;
    }
    return false;
  }

  /** The page's CSP, from its headers and its <meta> tags, as far as we can know it at once. */
  function blobWorkersRefused() {
    if (worker) return false; // our worker inherited its page's CSP, which let it start from a blob
    const metas = apply(querySelectorAll, document, ['meta[http-equiv="content-security-policy" i]']);
    const policies = [...headerPolicies];
    for (const meta of metas) apply(arrayPush, policies, [`${apply(getAttribute, meta, ['content']) ?? ''}`]);
    return policies.some(cspRefusesBlobWorkers);
  }

  /** `new Worker(scriptURL, options)`, with our API in it where it can be. */
  function startWorker(args, newTarget) {
    const plain = () => construct(NativeWorker, args, newTarget);
    if (args.length < 1) return plain();
    const given = toDOMString(args[0], 'scriptURL');
    const options = args[1];
    if (options !== undefined && options !== null && typeof options !== 'object' && typeof options !== 'function') return plain();
    // WorkerOptions, read once each, in WebIDL's order; the native constructor checks them.
    const nativeOptions = {};
    let type = 'classic';
    if (options !== undefined && options !== null) {
      const { credentials, name } = options;
      const rawType = options.type;
      if (credentials !== undefined) nativeOptions.credentials = credentials;
      if (name !== undefined) nativeOptions.name = toDOMString(name, 'name');
      if (rawType !== undefined) type = nativeOptions.type = toDOMString(rawType, 'type');
    }
    let url;
    try {
      url = new URLCtor(given, worker ? worker.url : apply(getBaseURI, document, []));
    } catch {
      return construct(NativeWorker, [given, nativeOptions], newTarget); // fails as it would
    }
    if (!canWrap(url) || (type !== 'classic' && type !== 'module')) return construct(NativeWorker, [given, nativeOptions], newTarget);
    const env = { url: apply(getHref, url, []), type, policyForbidden, ...workerConfig() };
    const envText = jsonStringify(env);
    // The API, then the script. Should building the API ever fail, the script still runs, with
    // no half of it left behind. (In a block: nothing of ours becomes the script's global.)
    const names = jsonStringify(['TCPSocket', 'UDPSocket', 'TCPServerSocket', 'MulticastController']);
    // A module worker's import() is written in the blob's text (it runs there, never in this
    // realm), which also keeps it out of the extension's own code, where a store's linter
    // rightly questions an import of a URL held in a variable.
    const source = `'use strict';\n{\nconst env = ${envText};\n`
      + (type === 'module' ? 'env.importModule = (url) => import(url);\n' : '')
      + `try { (${apply(fnToString, directSocketsApi, [])})(env); } catch { for (const name of ${names}) delete globalThis[name]; }\n`
      + `${type === 'module' ? 'await ' : ''}(${apply(fnToString, workerMain, [])})(env);\n}\n`;
    const blobUrl = createObjectURL(new BlobCtor([source], { type: 'text/javascript' }));
    let instance;
    try {
      instance = construct(NativeWorker, [blobUrl, nativeOptions], newTarget);
    } catch (error) {
      revokeObjectURL(blobUrl);
      throw error;
    }
    const relay = new WorkerRelay();
    apply(weakSet, workerRelays, [instance, relay]);
    relay.loadFailed = () => {
      // As a worker whose script cannot be fetched: a plain `error` event, and no worker.
      relay.end();
      apply(dispatch, instance, [new EventCtor('error')]);
    };
    relay.scriptError = (fields) => {
      // Where the browser would name our blob as the place of an uncaught error (see workerMain).
      const init = { message: `${fields.message}`, filename: `${fields.filename}`, lineno: +fields.lineno || 0, colno: +fields.colno || 0, cancelable: true };
      apply(dispatch, instance, [new ErrorEventCtor('error', init)]);
    };
    const onHello = (event) => {
      const ports = apply(getEventPorts, event, []);
      if (apply(getEventData, event, []) !== WORKER_HELLO || ports.length !== 1) return;
      apply(stopImmediate, event, []); // the first message, and ours: the page never sees it
      apply(removeListener, instance, ['message', onHello]);
      revokeObjectURL(blobUrl);
      relay.attach(ports[0]);
    };
    apply(addListener, instance, ['message', onHello]);
    return instance;
  }

  /**
   * In the worker, after the API: the real script, as if it had been started itself. Runs from
   * its source, in the worker: it may use only what it is given and the worker's globals.
   * @param {{url: string, type: string, signal: (op: string) => void}} env
   */
  function workerMain(env) {
    const real = new URL(env.url);
    const resolve = (value) => {
      try {
        return new URL(String(value), real.href).href;
      } catch {
        return value; // the native call fails on it as it would have
      }
    };
    // self.location is the script's, not our blob's.
    const location = Object.create(typeof WorkerLocation === 'function' ? WorkerLocation.prototype : Object.prototype);
    for (const key of ['href', 'origin', 'protocol', 'host', 'hostname', 'port', 'pathname', 'search', 'hash']) {
      const value = real[key];
      Object.defineProperty(location, key, { get: () => value, enumerable: true, configurable: true });
    }
    Object.defineProperty(location, 'toString', { value: { toString() { return real.href; } }.toString, configurable: true, writable: true });
    Object.defineProperty(globalThis, 'location', { get: () => location, enumerable: true, configurable: true });
    // Relative URLs resolve against the script, as they would have (the base URL is our blob's).
    const isRelative = (input) => typeof input === 'string' || input instanceof URL;
    const nativeFetch = globalThis.fetch;
    if (typeof nativeFetch === 'function') {
      globalThis.fetch = { fetch(input) {
        const args = Array.prototype.slice.call(arguments);
        if (args.length && isRelative(input)) args[0] = resolve(input);
        return Reflect.apply(nativeFetch, globalThis, args);
      } }.fetch;
    }
    for (const name of ['Request', 'EventSource']) {
      const Native = globalThis[name];
      if (typeof Native !== 'function') continue;
      globalThis[name] = new Proxy(Native, {
        construct(target, args, newTarget) {
          if (args.length && isRelative(args[0])) args[0] = resolve(args[0]);
          return Reflect.construct(target, args, newTarget);
        },
      });
    }
    if (typeof XMLHttpRequest === 'function') {
      const open = XMLHttpRequest.prototype.open;
      XMLHttpRequest.prototype.open = { open(method, url) {
        const args = Array.prototype.slice.call(arguments);
        if (args.length > 1 && isRelative(url)) args[1] = resolve(url);
        return Reflect.apply(open, this, args);
      } }.open;
    }
    const failedToLoad = () => {
      env.signal?.('load-failed'); // the page fires a plain `error` event, as for a missing script
      globalThis.close();
    };
    if (env.type === 'module') {
      // The module's own imports resolve against its URL; import.meta.url is the real one. The
      // import takes tasks, in which the page's first messages would find no listener yet: they
      // wait, and are dispatched once the module ran, as they would have been.
      const held = [];
      const hold = (event) => {
        event.stopImmediatePropagation();
        held.push(event);
      };
      self.addEventListener('message', hold, true);
      self.addEventListener('messageerror', hold, true);
      const release = () => {
        self.removeEventListener('message', hold, true);
        self.removeEventListener('messageerror', hold, true);
        for (const event of held) {
          const { data, origin, lastEventId, ports } = event;
          self.dispatchEvent(new MessageEvent(event.type, { data, origin, lastEventId, ports: [...ports] }));
        }
      };
      return env.importModule(env.url).then(release, (error) => {
        release();
        if (error instanceof TypeError && String(error.message).includes(env.url)) return failedToLoad();
        throw error;
      });
    }
    const nativeImport = globalThis.importScripts;
    globalThis.importScripts = { importScripts() {
      return Reflect.apply(nativeImport, globalThis, Array.prototype.map.call(arguments, resolve));
    } }.importScripts;
    try {
      nativeImport(env.url);
    } catch (error) {
      // A script that cannot be fetched; any other error is the script's own, and propagates.
      if (error instanceof DOMException && error.name === 'NetworkError') return failedToLoad();
      // V8 reports an error thrown by an imported script at the importScripts() call, in our
      // blob: reported here as the browser would have, at the frame that threw (SpiderMonkey
      // already names the script, and its stacks do not begin with the message).
      const stack = error instanceof Error ? String(error.stack) : '';
      const where = stack.startsWith(String(error)) ? /\n\s+at (?:.*\()?(\S+?):(\d+):(\d+)\)?/.exec(stack) : null;
      if (!where || !env.signal) throw error;
      const fields = { message: `Uncaught ${error}`, filename: where[1], lineno: +where[2], colno: +where[3] };
      const event = new ErrorEvent('error', { ...fields, error, cancelable: true });
      if (self.dispatchEvent(event)) env.signal('script-error', fields);
    }
    return undefined;
  }

  /** Our `Worker`, in this realm: the page's (or a worker's) own, with the API given to each. */
  function wrapWorkers() {
    if (NativeWorker === null || !documentAllowed() || policyForbidden) return; // the API is absent there
    const Wrapped = new ProxyCtor(NativeWorker, { construct: (_target, args, newTarget) => startWorker(args, newTarget) });
    ObjectCtor.defineProperty(NativeWorker.prototype, 'constructor', { value: Wrapped, writable: true, enumerable: false, configurable: true });
    ObjectCtor.defineProperty(globalThis, 'Worker', { value: Wrapped, writable: true, enumerable: false, configurable: true });
    const terminate = ObjectCtor.getOwnPropertyDescriptor(NativeWorker.prototype, 'terminate');
    const nativeTerminate = terminate.value;
    terminate.value = { terminate() {
      const relay = apply(weakGet, workerRelays, [this]);
      if (relay) relay.end(); // its sockets close in the host
      return apply(nativeTerminate, this, []);
    } }.terminate;
    ObjectCtor.defineProperty(NativeWorker.prototype, 'terminate', terminate);
  }
  if (worker) {
    // What the realm that started us knew of the bulk path when it did.
    bulkFrameUrl = typeof worker.bulkFrame === 'string' ? worker.bulkFrame : null;
    bulkDirectFirst = worker.bulkDirectFirst === true;
    hostFrame = worker.bulkHostFrame === true;
    if (NumberCtor.isSafeInteger(worker.bulkMessageSize)) bulkMessageSize = worker.bulkMessageSize;
    limits = checkedLimits(worker.limits);
  }
  wrapWorkers();
})(null);
// A page sees this name, not the extension's URL, in the stacks of errors we throw and of its
// own callbacks we call (Chromium; Firefox hides a content script's frames from the page).
//# sourceURL=direct-sockets-api.js
