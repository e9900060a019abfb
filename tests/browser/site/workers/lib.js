// What the worker tests ask a worker to do, shared by the classic (ops.js) and module (ops.mjs)
// entry points. The page posts {cmd, ...params}; the worker answers {ok, value} or {ok, error}.
// Loaded by importScripts or as a module: it defines nothing but self.workerOps, self.apiShape and
// self.udpExchange (which the page's scenarios use too: runner.html loads this file).
'use strict';
(() => {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  const now = () => performance.timeOrigin + performance.now(); // comparable with the page's

  async function sha256Hex(chunks) {
    const total = chunks.reduce((n, c) => n + c.byteLength, 0);
    const all = new Uint8Array(total);
    let offset = 0;
    for (const c of chunks) { all.set(c, offset); offset += c.byteLength; }
    return Array.from(new Uint8Array(await crypto.subtle.digest('SHA-256', all)), (b) => b.toString(16).padStart(2, '0')).join('');
  }

  function randomBytes(size) {
    const out = new Uint8Array(size);
    for (let i = 0; i < size; i += 65536) crypto.getRandomValues(out.subarray(i, Math.min(size, i + 65536)));
    return out;
  }

  async function readAll(readable) {
    const reader = readable.getReader();
    const chunks = [];
    for (let r = await reader.read(); !r.done; r = await reader.read()) chunks.push(r.value);
    return chunks;
  }

  let stopPumping = null;

  /**
   * A bound and a connected UDP socket on loopback trade `count` datagrams of growing size,
   * each echoed back: what went wrong, how each closed, and what each was opened with. Shared
   * by the page's scenario (scenarios.js, which loads this file too) and the worker's.
   */
  self.udpExchange = async ({ count }) => {
    const bound = new UDPSocket({ localAddress: '127.0.0.1' });
    const boundInfo = await bound.opened;
    const connected = new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: boundInfo.localPort });
    const connectedInfo = await connected.opened;
    const boundReader = boundInfo.readable.getReader();
    const boundWriter = boundInfo.writable.getWriter();
    const connectedReader = connectedInfo.readable.getReader();
    const connectedWriter = connectedInfo.writable.getWriter();
    const problems = [];
    for (let size = 1; size <= count; size++) {
      await connectedWriter.write({ data: new Uint8Array(size).fill(size) });
      const { value } = await boundReader.read();
      if (value.data.byteLength !== size || value.data[size - 1] !== (size & 255)) problems.push(`bound got ${value.data.byteLength} for ${size}`);
      if (value.remoteAddress !== '127.0.0.1' || value.remotePort !== connectedInfo.localPort) problems.push(`sender ${value.remoteAddress}:${value.remotePort}`);
      await boundWriter.write({ data: value.data, remoteAddress: value.remoteAddress, remotePort: value.remotePort });
      const reply = (await connectedReader.read()).value;
      if (reply.data.byteLength !== size || reply.data[0] !== (size & 255) || 'remoteAddress' in reply) {
        problems.push(`connected got ${JSON.stringify(Object.keys(reply))} ${reply.data.byteLength} for ${size}`);
      }
    }
    boundReader.releaseLock(); boundWriter.releaseLock(); connectedReader.releaseLock(); connectedWriter.releaseLock();
    const closing = async (socket) => socket.close().then(() => ({ ok: true }), (error) => ({ ok: false, error: { name: error?.name, message: error?.message } }));
    const closed = [await closing(bound), await closing(connected)];
    return {
      problems, closed,
      connectedInfo: { remoteAddress: connectedInfo.remoteAddress, remotePort: connectedInfo.remotePort === boundInfo.localPort, hasMulticast: 'multicastController' in connectedInfo },
      boundInfo: { localAddress: boundInfo.localAddress, hasRemote: 'remoteAddress' in boundInfo, controller: Object.prototype.toString.call(boundInfo.multicastController) },
    };
  };

  /** The interfaces' members, as types/direct-sockets.d.ts declares them (compared with a page's). */
  self.apiShape = () => Object.fromEntries(['TCPSocket', 'UDPSocket', 'TCPServerSocket', 'MulticastController'].map((name) => {
    const C = self[name];
    return [name, { length: C.length, members: Object.getOwnPropertyNames(C.prototype).sort(), tag: Object.prototype.toString.call(C.prototype) }];
  }));

  self.workerOps = {
    presence() {
      return { TCPSocket: typeof TCPSocket, UDPSocket: typeof UDPSocket, TCPServerSocket: typeof TCPServerSocket, MulticastController: typeof MulticastController };
    },

    shape() {
      return self.apiShape();
    },

    async echo({ port, text }) {
      const socket = new TCPSocket('127.0.0.1', port);
      const { readable, writable } = await socket.opened;
      const writer = writable.getWriter();
      const reader = readable.getReader();
      const start = performance.now(); // from opened to the echo: held while a bulk path attaches
      await writer.write(enc.encode(text));
      let got = '';
      while (got.length < text.length) {
        const { value, done } = await reader.read();
        if (done) break;
        got += dec.decode(value, { stream: true });
      }
      const ms = performance.now() - start;
      await writer.close();
      const end = await reader.read();
      await socket.closed;
      return { got, ms, endDone: end.done };
    },

    async bothWays({ port, size }) {
      const upload = randomBytes(size);
      const started = performance.now();
      const socket = new TCPSocket('127.0.0.1', port);
      const info = await socket.opened;
      const reading = readAll(info.readable);
      const writer = info.writable.getWriter();
      for (let i = 0; i < size; i += 256 * 1024) {
        await writer.ready;
        writer.write(upload.subarray(i, Math.min(size, i + 256 * 1024)));
      }
      await writer.close();
      const received = await reading;
      await socket.closed;
      const elapsedMs = performance.now() - started;
      return { elapsedMs, uploadSha: await sha256Hex([upload]), receivedSha: await sha256Hex(received), receivedBytes: received.reduce((n, c) => n + c.byteLength, 0) };
    },

    udp({ count }) {
      return self.udpExchange({ count });
    },

    async server() {
      // A server in the worker accepts a connection, from a client in the worker, and echoes.
      const server = new TCPServerSocket('127.0.0.1');
      const { readable: incoming, localPort } = await server.opened;
      const client = new TCPSocket('127.0.0.1', localPort);
      const clientInfo = await client.opened;
      const { value: accepted } = await incoming.getReader().read();
      const acceptedInfo = await accepted.opened;
      acceptedInfo.readable.pipeTo(acceptedInfo.writable);
      const writer = clientInfo.writable.getWriter();
      const reader = clientInfo.readable.getReader();
      await writer.write(enc.encode('through the server'));
      const got = dec.decode((await reader.read()).value);
      await writer.close();
      const end = await reader.read();
      return { got, endDone: end.done, isTCPSocket: accepted instanceof TCPSocket, remotePortMatches: acceptedInfo.remotePort === clientInfo.localPort };
    },

    async hold({ port }) {
      // Opens a socket and a server (which only native messaging carries) and keeps them: the
      // page ends the worker.
      const socket = new TCPSocket('127.0.0.1', port);
      await socket.opened;
      const server = new TCPServerSocket('127.0.0.1');
      const { localPort } = await server.opened;
      return { serverPort: localPort };
    },

    async holdSocket({ port }) {
      const socket = new TCPSocket('127.0.0.1', port);
      await socket.opened;
      self.held = socket; // kept until the page ends the worker
      return 'opened';
    },

    closeSelf() {
      setTimeout(() => self.close(), 0);
      return 'closing';
    },

    async pump({ port, chunk }) {
      // Echoes as fast as it can until told to stop, noting when each byte came back.
      const socket = new TCPSocket('127.0.0.1', port);
      const { readable, writable } = await socket.opened;
      const writer = writable.getWriter();
      const reader = readable.getReader();
      const block = randomBytes(chunk);
      let stopped = false;
      const done = new Promise((resolve) => { stopPumping = resolve; }).then(() => { stopped = true; });
      const samples = [];
      let received = 0;
      let lastSample = 0;
      const writing = (async () => {
        while (!stopped) {
          await writer.ready;
          writer.write(block);
        }
      })();
      const reading = (async () => {
        while (!stopped) {
          const { value, done: end } = await reader.read();
          if (end) break;
          received += value.byteLength;
          const t = now();
          if (t - lastSample >= 20) {
            samples.push([t, received]);
            lastSample = t;
          }
        }
      })();
      self.postMessage({ progress: 'pumping' });
      await done;
      samples.push([now(), received]);
      socket.close().catch(() => {});
      void writing; void reading;
      return { samples };
    },

    stopPump() {
      stopPumping?.();
      return 'stopping';
    },
  };

  self.addEventListener('message', async (event) => {
    const { cmd, ...params } = event.data ?? {};
    if (!(cmd in self.workerOps)) return;
    try {
      self.postMessage({ ok: true, cmd, value: await self.workerOps[cmd](params) });
    } catch (e) {
      self.postMessage({ ok: false, cmd, error: { name: e?.name, message: e?.message, stack: e?.stack } });
    }
  });
})();
