// @ts-check
// The page-facing Direct Sockets API, built in the page's own realm (a MAIN-world content
// script at document_start): Firefox's Xray wrappers refuse page-facing objects built anywhere
// else. It holds no authority: every message goes through the isolated bridge to the
// background, which stamps the sender as the browser reports it, and to the host, which decides.
(() => {
  'use strict';
  if (!globalThis.isSecureContext || typeof globalThis.TCPSocket !== 'undefined') return;

  // Built-ins are captured before any page script runs, so a page that replaces them later
  // cannot change how the API behaves for it.
  const {
    Promise: PromiseCtor, ReadableStream: ReadableStreamCtor, WritableStream: WritableStreamCtor,
    DOMException: DOMExceptionCtor, TypeError: TypeErrorCtor, Uint8Array: Uint8ArrayCtor,
    ArrayBuffer: ArrayBufferCtor, MessageChannel: MessageChannelCtor,
    MessageEvent: MessageEventCtor, Map: MapCtor, Object: ObjectCtor,
    Number: NumberCtor, Math: MathObj, Reflect: ReflectObj, Symbol: SymbolCtor, queueMicrotask: queueTask,
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
  const u8Slice = Uint8ArrayCtor.prototype.slice;
  const getBufferByteLength = ObjectCtor.getOwnPropertyDescriptor(ArrayBufferCtor.prototype, 'byteLength').get;
  const SharedArrayBufferCtor = globalThis.SharedArrayBuffer;

  // Event names of the one-time handover of the private channel to the isolated bridge.
  const EVT_PORT = 'direct-sockets:port';
  const EVT_READY = 'direct-sockets:bridge-ready';

  const MAX_CHUNK = 512 * 1024; // bytes per message to the host (PROTOCOL.md)
  const SEND_WINDOW = 1024 * 1024; // unacknowledged bytes in flight per socket
  const RECEIVE_WINDOW = 1024 * 1024; // bytes the host may deliver ahead of the reader

  // -- the private channel -------------------------------------------------------------------

  const channel = new MessageChannelCtor();
  const port = channel.port1;
  let bridged = false;

  function handOver() {
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

  /** @type {Map<number, TcpSocketCore>} */
  const sockets = new MapCtor();
  let nextSid = 1;

  function post(message, transfer) {
    apply(portPost, port, [message, transfer || []]);
  }

  port.onmessage = (event) => {
    const message = event.data;
    const socket = apply(mapGet, sockets, [message.sid]);
    if (socket) socket.onMessage(message);
  };

  // -- WebIDL conversions --------------------------------------------------------------------

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

  /** TCPSocketOptions, members read once each in lexicographic order, as WebIDL does. */
  function convertTcpOptions(value) {
    const dict = toDictionary(value, "Failed to construct 'TCPSocket': options");
    const out = {};
    const dnsQueryType = dict.dnsQueryType;
    if (dnsQueryType !== undefined) out.dnsQueryType = toEnum(dnsQueryType, ['ipv4', 'ipv6'], 'SocketDnsQueryType');
    const keepAliveDelay = dict.keepAliveDelay;
    if (keepAliveDelay !== undefined) out.keepAliveDelay = enforceRange(keepAliveDelay, 4294967295, 'keepAliveDelay');
    const noDelay = dict.noDelay;
    out.noDelay = noDelay === undefined ? false : !!noDelay;
    const receiveBufferSize = dict.receiveBufferSize;
    if (receiveBufferSize !== undefined) out.receiveBufferSize = enforceRange(receiveBufferSize, 4294967295, 'receiveBufferSize');
    const sendBufferSize = dict.sendBufferSize;
    if (sendBufferSize !== undefined) out.sendBufferSize = enforceRange(sendBufferSize, 4294967295, 'sendBufferSize');
    return out;
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

  /** The document may use the API: top-level, or a frame of the top level's origin (2.13). */
  function documentAllowed() {
    if (window === window.top) return true;
    try {
      return window.top.location.origin === window.location.origin;
    } catch {
      return false; // a cross-origin ancestor
    }
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

  // -- one socket -----------------------------------------------------------------------------

  class TcpSocketCore {
    constructor(remoteAddress, remotePort, options) {
      this.sid = nextSid++;
      this.state = 'opening'; // opening -> open -> ended (closed settled)
      this.opened = deferred();
      this.closed = deferred();
      markHandled(this.closed.promise);
      this.firstError = null;
      this.info = null; // the TCPSocketOpenInfo, once opened resolved
      this.readableDone = false;
      this.writableDone = false;
      // receive side
      this.readController = null;
      this.credit = 0;
      this.pullWaiter = null;
      // send side
      this.writeController = null;
      this.sentTotal = 0;
      this.ackedTotal = 0;
      this.ackWaiters = []; // {until, resolve, reject}
      this.finWaiter = null;
      apply(mapSet, sockets, [this.sid, this]);
      if (!bridged || remoteAddress.length === 0 || remoteAddress.length > 253) {
        // No bridge (the extension is gone) or an address no resolver accepts: fail, never hang.
        queueTask(() => this.fail(domError('NetworkError', 'Network error.')));
        return;
      }
      post({ op: 'open', sid: this.sid, kind: 'tcp', remoteAddress, remotePort, options });
    }

    onMessage(message) {
      switch (message.op) {
        case 'opened': return this.onOpened(message);
        case 'data': return this.onData(message.buf);
        case 'ack': return this.onAck(message.bytes);
        case 'eof': return this.onEof();
        case 'fin_sent': return this.onFinSent();
        case 'closed': return this.onClosed();
        case 'error': return this.fail(domError(message.name || 'NetworkError', message.message || 'Network error.'));
      }
    }

    onOpened(message) {
      if (this.state !== 'opening') return;
      this.state = 'open';
      const readable = new ReadableStreamCtor({
        type: 'bytes',
        start: (controller) => { this.readController = controller; },
        pull: (controller) => this.pull(controller),
        cancel: () => {
          this.readableDone = true;
          this.wakePull();
          if (this.state === 'open') post({ op: 'cancel', sid: this.sid });
        },
      }, { highWaterMark: RECEIVE_WINDOW });
      const writable = new WritableStreamCtor({
        start: (controller) => { this.writeController = controller; },
        write: (chunk) => this.write(chunk),
        close: () => this.closeWriting(),
        abort: () => this.abortWriting(),
      }, { highWaterMark: 1 });
      this.info = {
        readable, writable,
        remoteAddress: message.remoteAddress, remotePort: message.remotePort,
        localAddress: message.localAddress, localPort: message.localPort,
      };
      this.opened.resolve(this.info);
    }

    // receiving

    pull(controller) {
      if (this.readableDone || this.state !== 'open') return undefined;
      const request = controller.byobRequest;
      const want = MathObj.max(controller.desiredSize || 0, request && request.view ? request.view.byteLength : 0);
      const grant = MathObj.min(want, RECEIVE_WINDOW) - this.credit;
      // Grant in large steps (or when nothing is granted at all): fewer messages to the host.
      if (grant > 0 && (this.credit === 0 || grant >= RECEIVE_WINDOW / 4)) {
        this.credit += grant;
        post({ op: 'read', sid: this.sid, bytes: grant });
      }
      // Called again once something arrives: the stream never asks twice for the same room.
      return new PromiseCtor((resolve) => { this.pullWaiter = resolve; });
    }

    wakePull() {
      const waiter = this.pullWaiter;
      this.pullWaiter = null;
      if (waiter) waiter();
    }

    onData(buffer) {
      if (this.readableDone) return;
      const bytes = new Uint8ArrayCtor(buffer);
      this.credit -= bytes.byteLength;
      this.readController.enqueue(bytes);
      this.wakePull();
    }

    onEof() {
      if (this.readableDone) return;
      this.readableDone = true;
      const controller = this.readController;
      controller.close();
      const request = controller.byobRequest;
      if (request) request.respond(0);
      this.wakePull();
    }

    // sending

    write(chunk) {
      const bytes = copyBufferSource(chunk);
      if (bytes === null) {
        // Errors the writable; the host ends the writing side as for an abort.
        this.writeError(new TypeErrorCtor('The chunk is not an ArrayBuffer or ArrayBufferView.'));
        throw new TypeErrorCtor('The chunk is not an ArrayBuffer or ArrayBufferView.');
      }
      if (bytes.byteLength === 0) return undefined;
      return this.sendBytes(bytes);
    }

    async sendBytes(bytes) {
      for (let offset = 0; offset < bytes.byteLength; offset += MAX_CHUNK) {
        const piece = apply(u8Slice, bytes, [offset, offset + MAX_CHUNK]);
        // Never more than the window unacknowledged: the host refuses more, memory stays flat.
        await this.acked(this.sentTotal + piece.byteLength - SEND_WINDOW);
        this.sentTotal += piece.byteLength;
        post({ op: 'send', sid: this.sid, buf: piece.buffer }, [piece.buffer]);
      }
      // The write resolves once the host has handed every byte to the OS.
      await this.acked(this.sentTotal);
    }

    acked(until) {
      if (this.firstError && !this.writableDone) return PromiseCtor.reject(this.firstError);
      if (this.ackedTotal >= until) return PromiseCtor.resolve();
      const waiter = deferred();
      this.ackWaiters.push({ until, resolve: waiter.resolve, reject: waiter.reject });
      return waiter.promise;
    }

    onAck(bytes) {
      this.ackedTotal += bytes;
      const waiting = this.ackWaiters;
      this.ackWaiters = [];
      for (const waiter of waiting) {
        if (this.ackedTotal >= waiter.until) waiter.resolve();
        else this.ackWaiters.push(waiter);
      }
    }

    closeWriting() {
      this.finWaiter = deferred();
      post({ op: 'shutdown', sid: this.sid, abort: false });
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
      post({ op: 'shutdown', sid: this.sid, abort: true });
      this.rejectWaiters(domError('AbortError', 'Stream closed.'));
    }

    writeError(error) {
      if (!this.firstError) this.firstError = error;
      if (!this.writableDone && this.state === 'open') {
        this.writableDone = true;
        post({ op: 'shutdown', sid: this.sid, abort: true });
      }
    }

    rejectWaiters(error) {
      for (const waiter of this.ackWaiters) waiter.reject(error);
      this.ackWaiters = [];
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
        if (!this.writableDone) {
          this.writableDone = true;
          try { this.writeController.error(error); } catch { /* already errored */ }
        }
        this.rejectWaiters(error);
        this.wakePull();
      }
      this.closed.reject(this.firstError);
    }
  }

  // -- the interface ----------------------------------------------------------------------------

  class TCPSocket {
    /** @type {TcpSocketCore} */
    #core;

    /** @returns {TcpSocketCore | null} */
    static #coreOf(self) {
      return self !== null && typeof self === 'object' && #core in self ? self.#core : null;
    }

    constructor(remoteAddress, remotePort, options = undefined) {
      if (arguments.length < 2) {
        throw new TypeErrorCtor(`Failed to construct 'TCPSocket': 2 arguments required, but only ${arguments.length} present.`);
      }
      const address = toDOMString(remoteAddress, 'remoteAddress');
      const port = wrapUnsignedShort(remotePort, 'remotePort');
      const opts = convertTcpOptions(options);
      if (!documentAllowed()) {
        throw domError('NotAllowedError', "Failed to construct 'TCPSocket': Permissions-Policy: direct-sockets is disabled.");
      }
      if (opts.keepAliveDelay !== undefined && opts.keepAliveDelay < 1000) {
        throw new TypeErrorCtor("Failed to construct 'TCPSocket': keepAliveDelay must be no less than 1000 milliseconds.");
      }
      if (opts.sendBufferSize === 0) throw new TypeErrorCtor("Failed to construct 'TCPSocket': sendBufferSize must be greater than zero.");
      if (opts.receiveBufferSize === 0) throw new TypeErrorCtor("Failed to construct 'TCPSocket': receiveBufferSize must be greater than zero.");
      this.#core = new TcpSocketCore(address, port, opts);
    }

    // Promise-typed members reject, rather than throw, on a wrong `this` (WebIDL).
    get opened() {
      const core = TCPSocket.#coreOf(this);
      return core ? core.opened.promise : PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
    }

    get closed() {
      const core = TCPSocket.#coreOf(this);
      return core ? core.closed.promise : PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
    }

    close() {
      const core = TCPSocket.#coreOf(this);
      if (!core) return PromiseCtor.reject(new TypeErrorCtor('Illegal invocation'));
      const info = core.info;
      if (info === null) {
        // opened is pending or rejected
        return PromiseCtor.reject(domError('InvalidStateError', 'Socket is not properly initialized.'));
      }
      if (core.state === 'ended') return core.closed.promise;
      if (info.readable.locked || info.writable.locked) {
        return PromiseCtor.reject(domError('InvalidStateError', 'Close called on a socket with locked streams.'));
      }
      const reason = domError('AbortError', 'Stream closed.');
      markHandled(info.readable.cancel(reason));
      markHandled(info.writable.abort(reason));
      return core.closed.promise;
    }
  }

  // WebIDL attributes and operations are enumerable, and interfaces carry their tag.
  for (const name of ['opened', 'closed', 'close']) {
    const descriptor = ObjectCtor.getOwnPropertyDescriptor(TCPSocket.prototype, name);
    descriptor.enumerable = true;
    ObjectCtor.defineProperty(TCPSocket.prototype, name, descriptor);
  }
  ObjectCtor.defineProperty(TCPSocket.prototype, SymbolCtor.toStringTag, { value: 'TCPSocket', configurable: true });
  ObjectCtor.defineProperty(globalThis, 'TCPSocket', { value: TCPSocket, writable: true, configurable: true, enumerable: false });
})();
