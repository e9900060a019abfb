// @ts-check
// The bulk path's frame: an extension page the page's API embeds, hidden, to carry its TCP
// sockets' streams over loopback WebSockets to the host (docs/BULK.md). Being the extension's,
// its connections are not the page's: the page's Content-Security-Policy and Chromium's Local
// Network Access checks do not apply to them. The page talks to it over a MessagePort, with
// transferred ArrayBuffers. It connects only to the host's bulk server, and only with a secret
// the background confirms is a live offer: embedded by any other page, it reaches nothing.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;

// One port from the page, and one more for each of its dedicated workers, so that a worker's
// bytes never wait for the page's thread (docs/API.md, "Workers"). Each port names its own
// sockets; a page can open at most this many.
const MAX_PORTS = 64;
let ports = 0;

addEventListener('message', (event) => {
  if (ports >= MAX_PORTS || event.source !== parent || event.data !== 'direct-sockets-bulk' || event.ports.length !== 1) return;
  ports += 1;
  serve(event.ports[0]);
});

/** @param {MessagePort} port */
function serve(port) {
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
    let confirmed = false;
    try {
      confirmed = await api.runtime.sendMessage({ op: 'bulk-check', url, token });
    } catch {
      confirmed = false;
    }
    if (!confirmed) {
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
    ws.onopen = () => ws.send(token);
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

  function fromPage(message) {
    if (!message || typeof message !== 'object' || typeof message.sid !== 'number') return;
    const { sid } = message;
    if (message.op === 'attach') {
      if (typeof message.url === 'string' && typeof message.token === 'string') attach(sid, message.url, message.token);
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
