// @ts-check
// The bulk path's frame (docs/BULK.md): embedded hidden by the page's API, it carries TCP sockets'
// streams over loopback WebSockets to the host. The page, or one of its dedicated workers, talks
// to it over a MessagePort, with transferred ArrayBuffers. The same script runs in two frames:
// - the extension's (`bulk.html`, Chromium): its connections are the extension's, so neither the
//   page's Content-Security-Policy nor Local Network Access applies to them. It connects only to
//   the host's bulk server, and only with a secret the background confirms is a live offer:
//   embedded by any other page, it reaches nothing.
// - the host's own (`http://localhost:PORT/frame` or 127.0.0.1, Firefox's workers, served by the
//   host: sockets/bulk_frame.py): of another site than the page, it has a process of its own, so
//   a worker's bytes keep moving while the page's main thread is busy. It has no extension API:
//   it connects only to the server that served it, and claims a socket for the page the browser
//   says embedded it, which the host checks is the socket's.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;
const hostFrame = location.protocol === 'http:';
const HOST_BULK_URL = `ws://127.0.0.1:${location.port}/`;

// One port from the page, and one more for each of its dedicated workers, so that a worker's
// bytes never wait for the page's thread (docs/API.md, "Workers"). Each port names its own
// sockets; a page can open at most this many.
const MAX_PORTS = 64;
let ports = 0;

addEventListener('message', (event) => {
  if (ports >= MAX_PORTS || event.source !== parent || event.data !== 'direct-sockets-bulk' || event.ports.length !== 1) return;
  ports += 1;
  serve(event.ports[0], event.origin);
});

/**
 * @param {MessagePort} port
 * @param {string} embedder the origin of the page that handed us the port, as the browser says
 */
function serve(port, embedder) {
  /** @type {Map<number, {ws: WebSocket, attached: boolean, ended: boolean}>} */
  const channels = new Map();
  port.onmessage = (message) => fromPage(message.data);
  port.postMessage({ op: 'frame-ready' });

  function toPage(message, transfer = []) {
    port.postMessage(message, transfer);
  }

  async function attach(sid, url, token) {
    if (channels.has(sid)) return;
    const failed = (reason) => toPage({ op: 'bulk_failed', sid, reason });
    if (hostFrame) {
      url = HOST_BULK_URL;
    } else if (!await confirmed(url, token)) {
      failed('unconfirmed');
      return;
    }
    let ws;
    try {
      ws = new WebSocket(url);
    } catch {
      failed('refused');
      return;
    }
    ws.binaryType = 'arraybuffer';
    const channel = { ws, attached: false, ended: false };
    channels.set(sid, channel);
    ws.onopen = () => ws.send(hostFrame ? JSON.stringify({ secret: token, page: embedder }) : token);
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        toPage({ op: 'data', sid, buf: event.data }, [event.data]);
        return;
      }
      let parsed;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        return;
      }
      const { type, id, detail, code, ...fields } = parsed; // the reason is for the popup, not the page
      if (type === 'attached') {
        channel.attached = true;
        toPage({ op: 'attached', sid });
        return;
      }
      if (type === 'closed' || type === 'error') channel.ended = true;
      toPage({ op: type, sid, ...fields });
    };
    ws.onclose = () => {
      if (!channel.attached) {
        failed('refused');
      } else if (!channel.ended) {
        // The host went away, or dropped the socket, without saying how it ended.
        toPage({ op: 'error', sid, name: 'NetworkError', message: 'Network error.' });
      }
      channels.delete(sid);
    };
  }

  /** The extension's frame asks the background whether this is a live offer of the host's. */
  async function confirmed(url, token) {
    try {
      return await api.runtime.sendMessage({ op: 'bulk-check', url, token }) === true;
    } catch {
      return false;
    }
  }

  function fromPage(message) {
    if (!message || typeof message !== 'object' || typeof message.sid !== 'number') return;
    const { sid } = message;
    if (message.op === 'attach') {
      // The host's frame serves only a socket whose offer names it: after the host started
      // again, this frame's port may be anyone's.
      if (hostFrame && message.frame !== location.href) toPage({ op: 'bulk_failed', sid, reason: 'unconfirmed' });
      else if (typeof message.url === 'string' && typeof message.token === 'string') attach(sid, message.url, message.token);
      return;
    }
    const channel = channels.get(sid);
    if (!channel || !channel.attached) return;
    const ws = channel.ws;
    switch (message.op) {
      case 'send':
        if (!(message.buf instanceof ArrayBuffer)) return;
        ws.send(message.buf);
        return;
      case 'control':
        // A read, shutdown or cancel, as the page's API encoded it (page-api.js `bulkControl`):
        // the same text the page could send on its own WebSocket; the host checks it.
        if (typeof message.text === 'string' && message.text.length <= 256) ws.send(message.text);
        return;
      case 'release':
        channel.ended = true;
        ws.close();
        channels.delete(sid);
    }
  }
}
