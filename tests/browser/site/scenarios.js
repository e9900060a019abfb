// Scenarios run in a real page through the extension. Each returns a JSON value for the test.
'use strict';

const enc = new TextEncoder();
const dec = new TextDecoder();

function errorOf(e) {
  return { name: e?.name ?? String(e), message: e?.message ?? '', isDOMException: e instanceof DOMException };
}

async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (e) {
    return { ok: false, error: errorOf(e) };
  }
}

async function sha256Hex(chunks) {
  const total = chunks.reduce((n, c) => n + c.byteLength, 0);
  const all = new Uint8Array(total);
  let offset = 0;
  for (const c of chunks) { all.set(c, offset); offset += c.byteLength; }
  const digest = await crypto.subtle.digest('SHA-256', all);
  return Array.from(new Uint8Array(digest), (b) => b.toString(16).padStart(2, '0')).join('');
}

function randomBytes(size) {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(size, i + 65536)));
  return out;
}

/** Writes `text` and reads until as many characters came back (from an echo server). */
async function writeThenReadBack(writer, reader, text) {
  await writer.write(enc.encode(text));
  let got = '';
  while (got.length < text.length) {
    const { value, done } = await reader.read();
    if (done) break;
    got += dec.decode(value, { stream: true });
  }
  return got;
}

async function readAll(readable) {
  const reader = readable.getReader();
  const chunks = [];
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  reader.releaseLock();
  return chunks;
}

// The hostile scan's first hook goes in as early as a page's own script can run, before the
// API reads what the bridge sent it (see scanForExtensionUrls).
const earlyData = [];
if (new URLSearchParams(location.search).get('scenario') === 'scanForExtensionUrls') {
  const getter = Object.getOwnPropertyDescriptor(MessageEvent.prototype, 'data').get;
  Object.defineProperty(MessageEvent.prototype, 'data', {
    configurable: true, get() { const value = getter.call(this); earlyData.push(value); return value; },
  });
}

window.scenarios = {
  async presence() {
    return {
      TCPSocket: typeof TCPSocket,
      isSecureContext: window.isSecureContext,
      length: typeof TCPSocket === 'function' ? TCPSocket.length : null,
      tag: typeof TCPSocket === 'function' ? Object.prototype.toString.call(TCPSocket.prototype) : null,
      protoKeys: typeof TCPSocket === 'function' ? Object.keys(TCPSocket.prototype).sort() : null,
    };
  },

  async echo({ port, text, address }) {
    const socket = new TCPSocket(address ?? '127.0.0.1', port, { noDelay: true, keepAliveDelay: 2000 });
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    const reader = info.readable.getReader();
    const start = performance.now();
    const got = await writeThenReadBack(writer, reader, text);
    const ms = performance.now() - start; // from opened to the echo: held while a bulk path attaches
    await writer.close(); // FIN; the echo server answers with its own
    const end = await reader.read();
    await socket.closed;
    return {
      got, ms, endDone: end.done,
      remoteAddress: info.remoteAddress, remotePort: info.remotePort,
      localAddress: info.localAddress, localPortValid: info.localPort > 0 && info.localPort < 65536,
      readableIsStream: info.readable instanceof ReadableStream, writableIsStream: info.writable instanceof WritableStream,
    };
  },

  async portWraps({ port }) {
    // remotePort is an unsigned short without [EnforceRange]: 65536 + p wraps to p.
    const socket = new TCPSocket('127.0.0.1', 65536 + port);
    const info = await socket.opened;
    const remotePort = info.remotePort;
    await socket.close();
    return { remotePort };
  },

  async bothWays({ port, size, options }) {
    const socket = new TCPSocket('127.0.0.1', port, options);
    const info = await socket.opened;
    const upload = randomBytes(size);
    const reading = readAll(info.readable);
    const writer = info.writable.getWriter();
    for (let i = 0; i < size; i += 256 * 1024) {
      await writer.ready;
      writer.write(upload.subarray(i, Math.min(size, i + 256 * 1024)));
    }
    await writer.close();
    const received = await reading;
    await socket.closed;
    return {
      uploadSha: await sha256Hex([upload]),
      receivedSha: await sha256Hex(received),
      receivedBytes: received.reduce((n, c) => n + c.byteLength, 0),
      maxChunk: Math.max(...received.map((c) => c.byteLength)),
    };
  },

  /**
   * An application that reuses one buffer: it overwrites it as soon as its write() settled,
   * between writes of fresh buffers that it does not wait for (several in one task), small and
   * large, at odd offsets. What reaches the peer must be what each write held when it was made.
   */
  async reusedBuffer({ port, rounds }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const { writable } = await socket.opened;
    const writer = writable.getWriter();
    const scratch = new Uint8Array(1024 * 1024 + 7);
    const sent = [];
    const sizes = [1, 100, 4096, 65536, 300000, 600000, 1048576];
    for (let round = 0; round < rounds; round++) {
      for (let i = 0; i < sizes.length; i++) {
        const size = sizes[(i + round) % sizes.length];
        const view = scratch.subarray(7 - (i % 7), 7 - (i % 7) + size);
        crypto.getRandomValues(view.subarray(0, Math.min(size, 65536)));
        view.fill((round * 31 + i) & 255, Math.min(size, 65536));
        sent.push(view.slice());
        if ((i + round) % 3 === 0) {
          await writer.write(view);
          view.fill(0xee); // the application's next use of its buffer, once the write settled
        } else {
          writer.write(view.slice()); // not waited for: the next ones join it in this task
        }
      }
      await writer.ready;
    }
    await writer.close();
    return { sha: await sha256Hex(sent), bytes: sent.reduce((n, c) => n + c.byteLength, 0) };
  },

  /**
   * Writes from every kind of task: timers and the page's own message channel (tasks the API
   * did not start, whose writes it gathers until the task ends) and the tasks that deliver what
   * was read (whose first write goes at once). Each write is a numbered word; the echo must
   * bring them back in the order they were written.
   */
  async writesFromEveryTask({ port, count }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const { readable, writable } = await socket.opened;
    const writer = writable.getWriter();
    let next = 0;
    const write = (n) => {
      for (let i = 0; i < n && next < count; i++) writer.write(new Uint32Array([next++]));
      if (next === count && !closing) closing = writer.close();
    };
    let closing = null;
    const channel = new MessageChannel();
    channel.port1.onmessage = () => write(2);
    const timers = setInterval(() => { write(3); channel.port2.postMessage(null); }, 0);
    const words = [];
    let pending = new Uint8Array(0);
    const reader = readable.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const joined = new Uint8Array(pending.length + value.length);
      joined.set(pending);
      joined.set(value, pending.length);
      const whole = joined.length - (joined.length % 4);
      words.push(...new Uint32Array(joined.slice(0, whole).buffer));
      pending = joined.slice(whole);
      write(1 + (words.length % 2)); // in the task that delivered what was read
      if (words.length === count) break;
    }
    clearInterval(timers);
    await socket.close().catch(() => {});
    const outOfOrder = words.findIndex((word, i) => word !== i);
    return { received: words.length, outOfOrder };
  },

  async peerFinFirst({ port }) {
    // The server sends its data and FIN; the readable ends, the writable stays usable.
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const chunks = await readAll(info.readable);
    const writer = info.writable.getWriter();
    await writer.write(enc.encode('after your FIN'));
    await writer.close();
    await socket.closed;
    return { received: chunks.reduce((n, c) => n + c.byteLength, 0) };
  },

  async pageFinFirst({ port }) {
    // We send FIN first; the readable still delivers what the peer sends, then ends.
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    await writer.write(enc.encode('half'));
    await writer.close();
    const writeAfterClose = await settle(writer.write(enc.encode('x')));
    const text = dec.decode(new Uint8Array((await readAll(info.readable)).flatMap((c) => Array.from(c))));
    await socket.closed;
    return { text, writeAfterClose };
  },

  async peerReset({ port }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const reader = info.readable.getReader();
    const writer = info.writable.getWriter();
    const first = await reader.read();
    await writer.write(enc.encode('!'));
    let readError = null;
    try {
      for (;;) {
        const { done } = await reader.read();
        if (done) break;
      }
    } catch (e) {
      readError = errorOf(e);
    }
    const closed = await settle(socket.closed);
    const writeAfter = await settle(writer.write(enc.encode('?')));
    return { first: dec.decode(first.value), readError, closed, writeAfter };
  },

  async notAllowed({ port, address }) {
    const unhandled = [];
    const onUnhandled = (e) => unhandled.push(String(e.reason));
    window.addEventListener('unhandledrejection', onUnhandled);
    const socket = new TCPSocket(address ?? '127.0.0.1', port);
    const opened = await settle(socket.opened);
    const closed = await settle(socket.closed);
    const closeCall = await settle(socket.close());
    // Leave time for an unobserved rejection to be reported, if one were.
    const socket2 = new TCPSocket(address ?? '127.0.0.1', port);
    await settle(socket2.opened); // closed of socket2 is never observed
    await new Promise((r) => setTimeout(r, 300));
    window.removeEventListener('unhandledrejection', onUnhandled);
    return { opened, closed, closeCall, unhandled };
  },

  async closeRules({ port }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const beforeOpen = await settle(socket.close());
    const info = await socket.opened;
    const reader = info.readable.getReader();
    const whileReadLocked = await settle(socket.close());
    reader.releaseLock();
    const writer = info.writable.getWriter();
    const whileWriteLocked = await settle(socket.close());
    writer.releaseLock();
    const closing = socket.close();
    const sameAsClosed = closing === socket.closed;
    const result = await settle(closing);
    const again = socket.close();
    const againSame = again === socket.closed;
    const readAfter = await settle(info.readable.getReader().read());
    const writeAfter = await settle(info.writable.getWriter().write(new Uint8Array(1)));
    return { beforeOpen, whileReadLocked, whileWriteLocked, sameAsClosed, result, againSame, readAfter, writeAfter };
  },

  async orderlyClose({ port }) {
    // The draft's orderly way out: close the writer, release it, then close the socket.
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    await writer.write(enc.encode('bye'));
    await writer.close();
    writer.releaseLock();
    const closed = await settle(socket.close());
    return { closed };
  },

  async byob({ port }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    await writer.write(enc.encode('0123456789'));
    const reader = info.readable.getReader({ mode: 'byob' });
    const got = [];
    let total = 0;
    while (total < 10) {
      const { value, done } = await reader.read(new Uint8Array(4));
      if (done) break;
      got.push({ length: value.byteLength, bufferLength: value.buffer.byteLength, text: dec.decode(value) });
      total += value.byteLength;
    }
    await writer.close();
    const end = await reader.read(new Uint8Array(4));
    reader.releaseLock();
    await socket.closed;
    return { got, endDone: end.done };
  },

  async backpressure({ port, megabytes }) {
    const socket = new TCPSocket('127.0.0.1', port, { sendBufferSize: 65536 });
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    const chunk = randomBytes(1024 * 1024);
    // Warm the path up, then let the test take its baseline before the 64 MiB start.
    await writer.write(chunk);
    await window.report({ ok: true, value: 'ready' });
    await fetch(`/wait?token=${new URLSearchParams(location.search).get('token')}`);
    // One write of everything: only the send window keeps it from piling up in the host.
    const started = performance.now();
    const big = writer.write(randomBytes(megabytes * 1024 * 1024));
    const desiredWhileWriting = writer.desiredSize;
    await big;
    await writer.close();
    await socket.close().catch(() => {});
    return { desiredWhileWriting, seconds: (performance.now() - started) / 1000 };
  },

  async badChunk({ port }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    const bad = await settle(writer.write('a string is not a BufferSource'));
    const closed = await settle(socket.closed);
    return { bad, closed };
  },

  async readThenHold({ port, size }) {
    // Reads `size` bytes, writes a few, says so, then waits for the socket to end.
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const reader = info.readable.getReader();
    let got = 0;
    while (got < size) {
      const { value, done } = await reader.read();
      if (done) break;
      got += value.byteLength;
    }
    const writer = info.writable.getWriter();
    await writer.write(new Uint8Array(3000));
    await window.report({ ok: true, value: got });
    return { closed: await settle(socket.closed) };
  },

  async pageWebSocket({ port }) {
    // The page's own WebSocket to loopback: what Local Network Access or a CSP do to it.
    return new Promise((resolve) => {
      try {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        ws.onopen = () => { ws.close(); resolve('open'); };
        ws.onerror = () => resolve('error');
      } catch (e) {
        resolve(`throws ${e.name}`);
      }
      setTimeout(() => resolve('timeout'), 5000);
    });
  },

  // -- a hostile page ---------------------------------------------------------------------------

  async forgePort({ port }) {
    // Hands the extension a channel of its own, as the API does at document_start, and asks it
    // to open a socket as another origin. The bridge took the API's channel long ago.
    const channel = new MessageChannel();
    const event = new MessageEvent('direct-sockets:port', { ports: [channel.port2], cancelable: true });
    window.dispatchEvent(event);
    const heard = [];
    channel.port1.onmessage = (e) => heard.push(e.data);
    channel.port1.postMessage({ op: 'open', sid: 1, kind: 'tcp', remoteAddress: '127.0.0.1', remotePort: port, options: {},
      origin: 'https://bank.example', tabId: 1, frameId: 0, incognito: false });
    window.postMessage({ op: 'open', sid: 2, kind: 'tcp', remoteAddress: '127.0.0.1', remotePort: port, options: {} }, '*');
    await new Promise((r) => setTimeout(r, 1500));
    return { taken: event.defaultPrevented, heard };
  },

  async borrowBulkFrame({ bulkFrame, wsPort }) {
    // Embeds the extension's bulk frame and asks it to connect somewhere with a made-up secret.
    const frame = document.createElement('iframe');
    frame.src = bulkFrame;
    document.documentElement.append(frame);
    await new Promise((r) => { frame.onload = r; });
    const channel = new MessageChannel();
    const heard = [];
    channel.port1.onmessage = (e) => heard.push(e.data);
    frame.contentWindow.postMessage('direct-sockets-bulk', '*', [channel.port2]);
    await new Promise((r) => setTimeout(r, 300));
    const token = btoa(String.fromCharCode(...crypto.getRandomValues(new Uint8Array(32))));
    channel.port1.postMessage({ op: 'attach', sid: 1, url: `ws://127.0.0.1:${wsPort}/`, token });
    channel.port1.postMessage({ op: 'send', sid: 1, buf: new ArrayBuffer(8) });
    await new Promise((r) => setTimeout(r, 1500));
    return heard;
  },

  async forgeOpen({ port }) {
    // A page where the API is rightly absent (not a secure context, or a refused frame) hands
    // the bridge a channel of its own and asks it to open a socket.
    const channel = new MessageChannel();
    const event = new MessageEvent('direct-sockets:port', { ports: [channel.port2], cancelable: true });
    window.dispatchEvent(event);
    const heard = [];
    channel.port1.onmessage = (e) => heard.push(e.data?.op);
    channel.port1.postMessage({ op: 'open', sid: 1, kind: 'tcp', remoteAddress: '127.0.0.1', remotePort: port, options: {} });
    await new Promise((r) => setTimeout(r, 1500));
    return { secure: window.isSecureContext, typeofTCPSocket: typeof TCPSocket, taken: event.defaultPrevented, heard };
  },

  async embed({ frameUrl, allow, dropAllow }) {
    // Embeds a frame, which reports for itself under its own token (the frame may embed another).
    // `dropAllow`: the attribute goes once the frame has loaded (its policy stays as it was; the
    // frame waits a little before it tries).
    const frame = document.createElement('iframe');
    if (allow !== undefined) frame.setAttribute('allow', allow);
    frame.src = frameUrl;
    const loaded = new Promise((r) => { frame.onload = r; });
    document.documentElement.append(frame);
    await loaded;
    if (dropAllow) frame.removeAttribute('allow');
    return 'embedded';
  },

  async askAndWithdraw({ port, count, holdMs }) {
    // A page floods the user: again and again a same-origin frame asks for a socket, and goes
    // away `holdMs` later, withdrawing its prompt.
    for (let i = 0; i < count; i++) {
      const frame = document.createElement('iframe');
      frame.src = `runner.html?${new URLSearchParams({ scenario: 'askOnly', token: `flood-${i}`, params: JSON.stringify({ port }) })}`;
      document.documentElement.append(frame);
      await new Promise((r) => { frame.onload = r; });
      await new Promise((r) => setTimeout(r, holdMs));
      frame.remove();
    }
    return 'done';
  },

  async askOnly({ port }) {
    new TCPSocket('127.0.0.1', port).opened.catch(() => {});
    return new Promise(() => {}); // never reports: it is removed while it asks
  },

  async frameOpens({ port, delay }) {
    // A framed document tries a granted destination: 'opened', or how it was refused.
    if (delay) await new Promise((r) => setTimeout(r, delay));
    try {
      const socket = new TCPSocket('127.0.0.1', port);
      const opened = await settle(socket.opened);
      if (opened.ok) await socket.close().catch(() => {});
      return opened.ok ? 'opened' : opened.error.name;
    } catch (e) {
      return `thrown ${e.name}`;
    }
  },

  async scanForExtensionUrls({ port }) {
    // A hostile page, its hooks in place before the API talks to the extension: it records every
    // string it can see that names an extension's origin (Firefox's is a per-install UUID).
    const seen = [];
    const look = (where, value) => {
      const text = typeof value === 'string' ? value : (() => { try { return JSON.stringify(value); } catch { return String(value); } })();
      if (/(moz|chrome)-extension:|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[a-p]{32}/.test(text ?? '')) seen.push(`${where}: ${text}`);
    };
    for (const value of earlyData) look('MessageEvent.data, early', value);
    const dataGetter = Object.getOwnPropertyDescriptor(MessageEvent.prototype, 'data').get;
    Object.defineProperty(MessageEvent.prototype, 'data', {
      configurable: true, get() { const value = dataGetter.call(this); look('MessageEvent.data', value); return value; },
    });
    for (const proto of [MessagePort.prototype, Window.prototype]) {
      const post = proto.postMessage;
      proto.postMessage = function (...args) { look('postMessage', args[0]); return post.apply(this, args); };
    }
    const setAttribute = Element.prototype.setAttribute;
    Element.prototype.setAttribute = function (name, value) { look(`setAttribute ${name}`, value); return setAttribute.call(this, name, value); };
    const srcSetter = Object.getOwnPropertyDescriptor(HTMLIFrameElement.prototype, 'src').set;
    Object.defineProperty(HTMLIFrameElement.prototype, 'src', { configurable: true, set(v) { look('iframe.src', v); srcSetter.call(this, v); }, get() { return this.getAttribute('src'); } });
    const observer = new MutationObserver((records) => {
      for (const r of records) {
        for (const node of r.addedNodes) if (node.nodeType === 1) look(`added <${node.localName}>`, node.outerHTML);
        if (r.type === 'attributes') look(`attribute ${r.attributeName}`, r.target.getAttribute(r.attributeName));
      }
    });
    observer.observe(document, { subtree: true, childList: true, attributes: true });
    const errors = [];
    const keep = (e) => { errors.push(e); look('error', { stack: e?.stack, fileName: e?.fileName, message: e?.message }); };
    try { new TCPSocket(); } catch (e) { keep(e); }
    try {
      new TCPSocket({ toString() { look('stack under our call', new Error().stack); return '127.0.0.1'; } }, port);
    } catch (e) { keep(e); }
    const socket = new TCPSocket('127.0.0.1', port);
    const opened = await socket.opened.catch((e) => { keep(e); return null; });
    if (opened) {
      const writer = opened.writable.getWriter();
      const reader = opened.readable.getReader();
      await writer.write(enc.encode('ping'));
      await reader.read();
      await socket.close().catch(keep);
    }
    await new Promise((r) => setTimeout(r, 300));
    observer.takeRecords();
    for (const frame of document.querySelectorAll('iframe')) look('iframe in the DOM', frame.outerHTML);
    for (const entry of performance.getEntries()) look(`performance ${entry.entryType}`, entry.name);
    look('document', document.documentElement.outerHTML);
    const frameSources = [...document.querySelectorAll('iframe')].map((frame) => frame.getAttribute('src'));
    return { opened: !!opened, frames: frameSources.length, frameSources, seen };
  },

  async flood({ port, count }) {
    const sockets = [];
    for (let i = 0; i < count; i++) sockets.push(new TCPSocket('127.0.0.1', port + (i % 3)));
    const results = await Promise.all(sockets.map((s) => settle(s.opened)));
    return results.map((r) => (r.ok ? 'opened' : r.error.name));
  },

  async streamMany({ port, count }) {
    // `count` sockets reading what a server streams without end; reports once all are busy,
    // then again when every one has failed, with how the readers ended.
    const sockets = [];
    for (let i = 0; i < count; i++) sockets.push(new TCPSocket('127.0.0.1', port));
    const infos = await Promise.all(sockets.map((s) => s.opened));
    let busy = 0;
    let announced;
    const allBusy = new Promise((r) => { announced = r; });
    const readers = infos.map(async (info) => {
      const reader = info.readable.getReader();
      let got = 0;
      let counted = false;
      try {
        for (;;) {
          const { value, done } = await reader.read();
          if (done) return 'done';
          got += value.byteLength;
          if (!counted && got >= 1024 * 1024) {
            counted = true;
            if (++busy === count) announced();
          }
        }
      } catch (e) {
        return e.name;
      }
    });
    await allBusy;
    await window.report({ ok: true, value: 'streaming' });
    const ended = await Promise.all(readers);
    const closed = await Promise.all(sockets.map((s) => settle(s.closed)));
    return { ended, closed: closed.map((c) => (c.ok ? 'ok' : c.error.name)) };
  },

  async shape({ port }) {
    // What the extension really defines, for comparison with types/direct-sockets.d.ts.
    const members = (C) => Object.getOwnPropertyNames(C.prototype).filter((n) => n !== 'constructor').sort();
    const tcp = new TCPSocket('127.0.0.1', port);
    const tcpInfo = await tcp.opened;
    const udp = new UDPSocket({ localAddress: '127.0.0.1' });
    const udpInfo = await udp.opened;
    const server = new TCPServerSocket('127.0.0.1');
    const serverInfo = await server.opened;
    const result = {
      classes: {
        TCPSocket: members(TCPSocket), UDPSocket: members(UDPSocket),
        TCPServerSocket: members(TCPServerSocket), MulticastController: members(MulticastController),
      },
      lengths: { TCPSocket: TCPSocket.length, UDPSocket: UDPSocket.length, TCPServerSocket: TCPServerSocket.length },
      infos: {
        TCPSocketOpenInfo: Object.keys(tcpInfo).sort(),
        UDPSocketOpenInfo: Object.keys(udpInfo).sort(),
        TCPServerSocketOpenInfo: Object.keys(serverInfo).sort(),
      },
    };
    await Promise.all([tcp.close(), udp.close(), server.close()].map((p) => p.catch(() => {})));
    return result;
  },

  async hold({ port, echoPort, before = 0, inWorker = false }) {
    // Opens a socket, says so, and waits for it to end: for the lifetime tests. First, `before`
    // sockets to `echoPort`, one after another, each echo a line and stay open: a line comes
    // back only once its socket's stream has taken its path (the WebSocket, or native messaging).
    // `inWorker`: the one socket is a classic worker's, which holds it.
    if (inWorker) {
      await ask(opsWorker('classic'), 'holdSocket', { port });
      await window.report({ ok: true, value: 'opened' });
      return new Promise(() => {});
    }
    const earlier = [];
    for (let i = 0; i < before; i++) {
      earlier.push(new TCPSocket('127.0.0.1', echoPort));
      const { readable, writable } = await earlier[i].opened;
      const line = `socket ${i}`;
      if (await writeThenReadBack(writable.getWriter(), readable.getReader(), line) !== line) throw new Error(`${line} did not come back`);
    }
    const socket = new TCPSocket('127.0.0.1', port);
    await socket.opened;
    await window.report({ ok: true, value: 'opened' });
    const closed = await settle(socket.closed);
    return { closed };
  },

  async frameHolds({ port }) {
    // A same-origin iframe opens a socket; the parent removes the iframe when the test says so.
    const token = new URLSearchParams(location.search).get('token');
    const frame = document.createElement('iframe');
    frame.src = `runner.html?${new URLSearchParams({ scenario: 'hold', token, params: JSON.stringify({ port }) })}`;
    document.documentElement.append(frame);
    await fetch(`/wait?token=${token}`);
    frame.remove();
    return 'removed';
  },

  async afterHostDeath({ port }) {
    const socket = new TCPSocket('127.0.0.1', port);
    const info = await socket.opened;
    const writer = info.writable.getWriter();
    await writer.write(enc.encode('ping'));
    const reader = info.readable.getReader();
    const { value } = await reader.read();
    await socket.close().catch(() => {});
    return { echoed: dec.decode(value) };
  },

  async validation() {
    const cases = {
      noArgs: () => new TCPSocket(),
      oneArg: () => new TCPSocket('127.0.0.1'),
      symbolAddress: () => new TCPSocket(Symbol('x'), 1),
      bigintPort: () => new TCPSocket('127.0.0.1', 1n),
      optionsNotObject: () => new TCPSocket('127.0.0.1', 1, 5),
      keepAliveLow: () => new TCPSocket('127.0.0.1', 1, { keepAliveDelay: 999 }),
      keepAliveNegative: () => new TCPSocket('127.0.0.1', 1, { keepAliveDelay: -1 }),
      keepAliveNaN: () => new TCPSocket('127.0.0.1', 1, { keepAliveDelay: NaN }),
      sendBufferZero: () => new TCPSocket('127.0.0.1', 1, { sendBufferSize: 0 }),
      receiveBufferZero: () => new TCPSocket('127.0.0.1', 1, { receiveBufferSize: 0 }),
      sendBufferTooLarge: () => new TCPSocket('127.0.0.1', 1, { sendBufferSize: 2 ** 32 }),
      receiveBufferInfinity: () => new TCPSocket('127.0.0.1', 1, { receiveBufferSize: Infinity }),
      dnsBad: () => new TCPSocket('127.0.0.1', 1, { dnsQueryType: 'ipv5' }),
      callWithoutNew: () => TCPSocket('127.0.0.1', 1),
      keepAliveOk: () => new TCPSocket('127.0.0.1', 1, { keepAliveDelay: 1000 }),
      sendBufferFraction: () => new TCPSocket('127.0.0.1', 1, { sendBufferSize: 1.9 }),
      portNaN: () => new TCPSocket('127.0.0.1', NaN),
      nullOptions: () => new TCPSocket('127.0.0.1', 1, null),
      dnsOk: () => new TCPSocket('127.0.0.1', 1, { dnsQueryType: 'ipv6' }),
    };
    const out = {};
    for (const [name, make] of Object.entries(cases)) {
      try {
        const socket = make();
        out[name] = 'ok';
        socket.opened.catch(() => {});
      } catch (e) {
        out[name] = e instanceof DOMException ? `DOMException:${e.name}` : e.constructor.name;
      }
    }
    const illegal = await settle(Object.getOwnPropertyDescriptor(TCPSocket.prototype, 'opened').get.call({}));
    out.illegalGetter = illegal.ok ? 'ok' : illegal.error.name;
    return out;
  },

  async thirdPartyFrame({ frameUrl }) {
    // The same scenario page, in a cross-origin iframe: its constructor must throw NotAllowedError.
    const frame = document.createElement('iframe');
    frame.src = frameUrl;
    document.documentElement.append(frame);
    return new Promise((resolve) => {
      window.addEventListener('message', (e) => resolve(e.data), { once: true });
    });
  },

  async inFrame() {
    let outcome;
    try {
      const socket = new TCPSocket('127.0.0.1', 9);
      socket.opened.catch(() => {});
      outcome = 'constructed';
    } catch (e) {
      outcome = e instanceof DOMException ? `DOMException:${e.name}` : e.constructor.name;
    }
    parent.postMessage({ typeofTCPSocket: typeof TCPSocket, outcome }, '*');
    return outcome;
  },

  // -- issue 4: UDP, servers, multicast -----------------------------------------------------------

  async serverEcho() {
    const server = new TCPServerSocket('127.0.0.1');
    const { readable: incoming, localAddress, localPort } = await server.opened;
    const client = new TCPSocket('127.0.0.1', localPort);
    const clientInfo = await client.opened;
    const acceptReader = incoming.getReader();
    const { value: accepted } = await acceptReader.read();
    const acceptedInfo = await accepted.opened;
    const isTCPSocket = accepted instanceof TCPSocket;
    // client -> server -> client
    const clientWriter = clientInfo.writable.getWriter();
    const serverReader = acceptedInfo.readable.getReader();
    const serverWriter = acceptedInfo.writable.getWriter();
    const clientReader = clientInfo.readable.getReader();
    await clientWriter.write(enc.encode('ping from client'));
    const atServer = dec.decode((await serverReader.read()).value);
    // Closing the server leaves the accepted socket open.
    acceptReader.releaseLock();
    const serverClosed = await settle(server.close());
    await serverWriter.write(enc.encode('pong from server'));
    const atClient = dec.decode((await clientReader.read()).value);
    await clientWriter.close();
    const serverSawEnd = (await serverReader.read()).done;
    await serverWriter.close();
    const clientSawEnd = (await clientReader.read()).done;
    const closedBoth = [await settle(client.closed), await settle(accepted.closed)];
    return {
      localAddress, localPortValid: localPort >= 1024, isTCPSocket, atServer, atClient, serverClosed, serverSawEnd, clientSawEnd, closedBoth,
      acceptedRemotePortMatches: acceptedInfo.remotePort === clientInfo.localPort,
      acceptedLocalPortMatches: acceptedInfo.localPort === localPort,
      acceptedRemoteAddress: acceptedInfo.remoteAddress,
    };
  },

  udpExchange: (params) => self.udpExchange(params), // workers/lib.js: the same in a worker

  /** The host's maxDatagram, whatever it is, holds for a write (test_limits.py). */
  async datagramLimit({ size }) {
    const bound = new UDPSocket({ localAddress: '127.0.0.1' });
    const boundInfo = await bound.opened;
    const connected = new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort });
    const writer = (await connected.opened).writable.getWriter();
    const fits = await settle(writer.write({ data: new Uint8Array(size).fill(7) }));
    const { value } = await boundInfo.readable.getReader().read();
    const over = await settle(writer.write({ data: new Uint8Array(size + 1) }));
    return { fits: fits.ok, received: value.data.byteLength, over: over.ok ? 'ok' : over.error };
  },

  /** How each kind of socket fares when the host's limits are missing or odd (test_limits.py). */
  async withoutLimits({ port }) {
    const tcp = new TCPSocket('127.0.0.1', port);
    const udp = new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: port });
    const server = new TCPServerSocket('127.0.0.1');
    const outcome = async (socket) => {
      const opened = await settle(socket.opened);
      const closed = await settle(socket.closed);
      return { opened: opened.ok ? 'ok' : opened.error.name, closed: closed.ok ? 'ok' : closed.error.name };
    };
    return { tcp: await outcome(tcp), udp: await outcome(udp), server: await outcome(server) };
  },

  async udpMessageRules() {
    const bound = new UDPSocket({ localAddress: '127.0.0.1' });
    const boundInfo = await bound.opened;
    const connected = new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort });
    const connectedInfo = await connected.opened;
    const outcome = async (writable, message) => {
      const writer = writable.getWriter();
      const result = await settle(writer.write(message));
      writer.releaseLock();
      return result.ok ? 'ok' : result.error.name;
    };
    return {
      connectedWithAddress: await outcome(connectedInfo.writable, { data: new Uint8Array(1), remoteAddress: '127.0.0.1', remotePort: 1 }),
      boundWithoutAddress: await outcome(boundInfo.writable, { data: new Uint8Array(1) }),
      // each writable is errored now; fresh sockets for the rest
      notBuffer: await outcome((await new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort }).opened).writable, { data: 'text' }),
      notObject: await outcome((await new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort }).opened).writable, 5),
      emptyOk: await outcome((await new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort }).opened).writable, { data: new Uint8Array(0) }),
    };
  },

  async udpNotAllowed({ port }) {
    const connected = await settle(new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: port }).opened);
    const lowBound = await settle(new UDPSocket({ localAddress: '127.0.0.1', localPort: 1023 }).opened);
    const lowServer = await settle(new TCPServerSocket('127.0.0.1', { localPort: 32767 }).opened);
    const bound = new UDPSocket({ localAddress: '127.0.0.1' });
    const info = await bound.opened;
    const writer = info.writable.getWriter();
    const ungrantedSend = await settle(writer.write({ data: new Uint8Array(1), remoteAddress: '127.0.0.1', remotePort: port }));
    return { connected, lowBound, lowServer, ungrantedSend };
  },

  async udpFlood({ port, total }) {
    // A bound socket that reads everything a Python sender sends, and says how far it got.
    const socket = new UDPSocket({ localAddress: '127.0.0.1', receiveBufferSize: 4 * 1024 * 1024 });
    const info = await socket.opened;
    const reader = info.readable.getReader();
    const writer = info.writable.getWriter();
    const tell = (text) => writer.write({ data: enc.encode(text), remoteAddress: '127.0.0.1', remotePort: port });
    await tell('hello');
    let expected = 0;
    const problems = [];
    while (expected < total) {
      const { value } = await reader.read();
      const view = new DataView(value.data.buffer, value.data.byteOffset, value.data.byteLength);
      const index = view.getUint32(0);
      if (index !== expected) { problems.push(`got ${index}, expected ${expected}`); if (problems.length > 5) break; }
      if (value.data.byteLength !== 4 * (1 + (index % 8))) problems.push(`datagram ${index} has ${value.data.byteLength} bytes`);
      expected = index + 1;
      if (expected % 100 === 0) tell(String(expected));
    }
    await tell('done');
    return { received: expected, problems };
  },

  async multicast({ group, count }) {
    const receivers = [];
    for (let i = 0; i < 2; i++) {
      const socket = new UDPSocket({ localAddress: '0.0.0.0', localPort: i ? receivers[0].info.localPort : undefined, multicastAllowAddressSharing: true });
      receivers.push({ socket, info: await socket.opened });
    }
    const port = receivers[0].info.localPort;
    const controller = receivers[0].info.multicastController;
    const errors = {};
    errors.badGroup = (await settle(controller.joinGroup('10.0.0.1'))).error?.name;
    errors.notIp = (await settle(controller.joinGroup('not-an-ip'))).error?.name;
    errors.leaveNotJoined = (await settle(controller.leaveGroup(group))).error?.name;
    const joining = controller.joinGroup(group);
    errors.joinWhileJoining = (await settle(controller.joinGroup(group))).error?.name;
    const listedWhileJoining = controller.joinedGroups.length;
    await joining;
    errors.joinTwice = (await settle(controller.joinGroup(group))).error?.name;
    errors.badSource = (await settle(controller.joinGroup(group, { sourceAddress: '127.0.0.1' }))).error?.name;
    await receivers[1].info.multicastController.joinGroup(group);
    const joinedGroups = controller.joinedGroups;
    const frozen = Object.isFrozen(joinedGroups) && joinedGroups === controller.joinedGroups;
    const sender = new UDPSocket({ localAddress: '127.0.0.1', multicastTimeToLive: 0, multicastLoopback: true });
    const senderInfo = await sender.opened;
    const writer = senderInfo.writable.getWriter();
    for (let n = 0; n < count; n++) await writer.write({ data: enc.encode(`datagram ${n}`), remoteAddress: group, remotePort: port });
    const got = [];
    for (const { info } of receivers) {
      const reader = info.readable.getReader();
      const texts = [];
      for (let n = 0; n < count; n++) {
        const { value } = await reader.read();
        texts.push(dec.decode(value.data));
        if (value.remoteAddress !== '127.0.0.1' || value.remotePort !== senderInfo.localPort) texts.push(`from ${value.remoteAddress}:${value.remotePort}`);
      }
      reader.releaseLock();
      got.push(texts);
    }
    await controller.leaveGroup(group);
    const afterLeave = controller.joinedGroups;
    await controller.joinGroup(group, { sourceAddress: '192.0.2.1' });
    const sourceSpecific = controller.joinedGroups;
    errors.leaveWithoutSource = (await settle(controller.leaveGroup(group))).error?.name;
    await receivers[0].socket.close();
    errors.joinAfterClose = (await settle(controller.joinGroup(group))).error?.name;
    return { errors, listedWhileJoining, joinedGroups, frozen, afterLeave, sourceSpecific, got };
  },

  async udpValidation() {
    const cases = {
      none: () => new UDPSocket(),
      empty: () => new UDPSocket({}),
      onlyRemoteAddress: () => new UDPSocket({ remoteAddress: '127.0.0.1' }),
      onlyRemotePort: () => new UDPSocket({ remotePort: 1 }),
      bothModes: () => new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: 1, localAddress: '127.0.0.1' }),
      localPortWithoutAddress: () => new UDPSocket({ localPort: 5000 }),
      localPortZero: () => new UDPSocket({ localAddress: '127.0.0.1', localPort: 0 }),
      localAddressName: () => new UDPSocket({ localAddress: 'localhost' }),
      dnsInBound: () => new UDPSocket({ localAddress: '127.0.0.1', dnsQueryType: 'ipv4' }),
      ipv6OnlyNotAny: () => new UDPSocket({ localAddress: '::1', ipv6Only: true }),
      ipv6OnlyConnected: () => new UDPSocket({ remoteAddress: '::1', remotePort: 1, ipv6Only: false }),
      remotePortRange: () => new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: 65536 }),
      ttlRange: () => new UDPSocket({ localAddress: '127.0.0.1', multicastTimeToLive: 256 }),
      sendBufferZero: () => new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: 1, sendBufferSize: 0 }),
      connectedOk: () => new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: 1, dnsQueryType: 'ipv4' }),
      boundOk: () => new UDPSocket({ localAddress: '127.0.0.1', localPort: 5000 }),
      ipv6OnlyOnAny: () => new UDPSocket({ localAddress: '::', ipv6Only: true }),
      ipv6Expanded: () => new UDPSocket({ localAddress: '0:0:0:0:0:0:0:0', ipv6Only: false }),
    };
    const server = {
      noArgs: () => new TCPServerSocket(),
      name: () => new TCPServerSocket('localhost'),
      portZero: () => new TCPServerSocket('127.0.0.1', { localPort: 0 }),
      backlogZero: () => new TCPServerSocket('127.0.0.1', { backlog: 0 }),
      ipv6OnlyNotAny: () => new TCPServerSocket('::1', { ipv6Only: true }),
      portRange: () => new TCPServerSocket('127.0.0.1', { localPort: -1 }),
      ok: () => new TCPServerSocket('127.0.0.1', { localPort: 40000, backlog: 5 }),
      ipv6OnlyFalseOk: () => new TCPServerSocket('::1', { ipv6Only: false }),
    };
    const run = (table) => {
      const out = {};
      for (const [name, make] of Object.entries(table)) {
        try {
          make().opened.catch(() => {});
          out[name] = 'ok';
        } catch (e) {
          out[name] = e instanceof DOMException ? `DOMException:${e.name}` : e.constructor.name;
        }
      }
      return out;
    };
    return {
      udp: run(cases), server: run(server),
      shapes: ['UDPSocket', 'TCPServerSocket', 'MulticastController'].map((n) => [n, typeof globalThis[n], Object.keys(globalThis[n].prototype).sort()]),
      controllerConstructible: (() => { try { new MulticastController(); return true; } catch (e) { return e.constructor.name; } })(),
    };
  },

  async ipv6() {
    const server = new TCPServerSocket('::1');
    const { readable: incoming, localPort } = await server.opened;
    const client = new TCPSocket('::1', localPort, { dnsQueryType: 'ipv6' });
    const clientInfo = await client.opened;
    const accepted = (await incoming.getReader().read()).value;
    const acceptedInfo = await accepted.opened;
    await clientInfo.writable.getWriter().write(enc.encode('v6'));
    const tcpText = dec.decode((await acceptedInfo.readable.getReader().read()).value);
    const bound = new UDPSocket({ localAddress: '::1' });
    const boundInfo = await bound.opened;
    const connected = new UDPSocket({ remoteAddress: '::1', remotePort: boundInfo.localPort });
    const connectedInfo = await connected.opened;
    await connectedInfo.writable.getWriter().write({ data: enc.encode('udp6') });
    const datagram = (await boundInfo.readable.getReader().read()).value;
    return {
      tcp: [clientInfo.remoteAddress, clientInfo.localAddress, acceptedInfo.remoteAddress, tcpText],
      udp: [boundInfo.localAddress, connectedInfo.remoteAddress, datagram.remoteAddress, dec.decode(datagram.data), datagram.remotePort === connectedInfo.localPort],
    };
  },

  async openMany({ port, count, address }) {
    // Several sockets at once from one tab: the user is asked about one at a time.
    const sockets = Array.from({ length: count }, () => new TCPSocket(address ?? '127.0.0.1', port));
    const outcomes = await Promise.all(sockets.map((s) => settle(s.opened)));
    return outcomes.map((o) => (o.ok ? 'opened' : o.error.name));
  },

  async joinAsked({ group }) {
    const socket = new UDPSocket({ localAddress: '0.0.0.0' });
    const { multicastController } = await socket.opened;
    const first = await settle(multicastController.joinGroup(group));
    const second = await settle(multicastController.joinGroup(group));
    return { first: first.ok ? 'joined' : first.error.name, second: second.ok ? 'joined' : second.error.name, joined: multicastController.joinedGroups };
  },

  async policyBlocked({ port }) {
    let opened;
    try {
      opened = await settle(new TCPSocket('127.0.0.1', port).opened);
    } catch (e) {
      opened = { ok: false, error: { name: e instanceof DOMException ? `DOMException:${e.name}` : e.constructor.name } };
    }
    let second;
    try {
      new TCPSocket('127.0.0.1', port).opened.catch(() => {});
      second = 'constructed';
    } catch (e) {
      second = e instanceof DOMException ? `DOMException:${e.name}` : e.constructor.name;
    }
    return { opened: opened.ok ? 'opened' : opened.error.name, second };
  },

  // -- TLS ---------------------------------------------------------------------------------------

  async tlsEcho({ port, options, text }) {
    const socket = new TCPSocket('127.0.0.1', port, options);
    const opened = await settle(socket.opened);
    if (!opened.ok) return { opened: false, error: opened.error };
    const info = opened.value;
    const writer = info.writable.getWriter();
    const reader = info.readable.getReader();
    const got = await writeThenReadBack(writer, reader, text);
    await writer.close();
    reader.releaseLock();
    await socket.close().catch(() => {});
    return { opened: true, got, tls: info.tls, frozen: Object.isFrozen(info.tls) };
  },

  async tlsOptionChecks() {
    const attempt = (options) => {
      try {
        new TCPSocket('127.0.0.1', 1, options).opened.catch(() => {});
        return 'ok';
      } catch (e) {
        return e.name;
      }
    };
    return {
      badEnum: attempt({ secureTransport: 'yes' }),
      tlsOptionWithoutTls: attempt({ serverName: 'a.test' }),
      badPin: attempt({ secureTransport: 'on', pinnedCertificates: ['not a pin'] }),
      badCa: attempt({ secureTransport: 'on', caCertificates: ['not a PEM'] }),
      alpnNotSequence: attempt({ secureTransport: 'on', alpn: 5 }),
      ok: attempt({ secureTransport: 'on', alpn: ['h2'], serverName: 'a.test' }),
      startTlsOnPlain: await (async () => {
        try {
          new TCPSocket('127.0.0.1', 1).startTls();
          return 'ok';
        } catch (e) {
          return e.name;
        }
      })(),
    };
  },

  async starttls({ port, options }) {
    const socket = new TCPSocket('127.0.0.1', port, { secureTransport: 'starttls' });
    const info = await socket.opened;
    const reader = info.readable.getReader();
    const writer = info.writable.getWriter();
    const readLine = async (r) => {
      let line = '';
      while (!line.endsWith('\r\n')) {
        const { value, done } = await r.read();
        if (done) break;
        line += dec.decode(value);
      }
      return line;
    };
    const greeting = await readLine(reader);
    await writer.write(enc.encode('STARTTLS\r\n'));
    const goAhead = await readLine(reader);
    reader.releaseLock();
    writer.releaseLock();
    const secure = socket.startTls(options);
    const secondCall = await settle((async () => socket.startTls(options))());
    const secureInfo = await secure.opened;
    const oldClosed = await settle(socket.closed);
    const oldWritable = await settle(info.writable.getWriter().write(enc.encode('x')));
    const sWriter = secureInfo.writable.getWriter();
    const sReader = secureInfo.readable.getReader();
    await sWriter.write(enc.encode('EHLO secure\r\n'));
    const echoed = await readLine(sReader);
    await sWriter.close();
    const end = await sReader.read();
    await secure.closed;
    return {
      greeting, goAhead, echoed, endDone: end.done, oldClosed, oldWritable, secondCall,
      isTCPSocket: secure instanceof TCPSocket, version: secureInfo.tls.version, spki: secureInfo.tls.peerCertificate.spkiSha256,
    };
  },

  async tlsServer() {
    const server = new TCPServerSocket('127.0.0.1', { secureTransport: 'on' });
    const { readable, localPort, tls } = await server.opened;
    await window.report({ ok: true, value: { localPort, certificate: tls.certificate } });
    const reader = readable.getReader();
    const { value: accepted } = await reader.read();
    const info = await accepted.opened;
    const aReader = info.readable.getReader();
    const aWriter = info.writable.getWriter();
    let got = '';
    while (!got.endsWith('\n')) {
      const { value, done } = await aReader.read();
      if (done) break;
      got += dec.decode(value);
    }
    await aWriter.write(enc.encode(`you said ${got}`));
    await aWriter.close();
    reader.releaseLock();
    await server.close();
    return { got, acceptedTls: info.tls.version };
  },
};
