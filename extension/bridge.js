// @ts-check
// The isolated content script of one frame: it carries messages between the page's API (MAIN
// world, over a private MessagePort) and the background (over a runtime port). It adds nothing
// and decides nothing; the background learns who is asking from the browser, not from here.
(() => {
  'use strict';
  const api = globalThis.browser ?? globalThis.chrome;
  const EVT_PORT = 'direct-sockets:port';
  const EVT_READY = 'direct-sockets:bridge-ready';

  /** @type {MessagePort | null} */
  let pagePort = null;
  /** @type {chrome.runtime.Port | null} */
  let background = null;
  /** Sockets of this frame that the background knows about. */
  const live = new Set();

  /**
   * The bulk path (docs/BULK.md): sockets whose stream travels over a loopback WebSocket to
   * the host. Until it attaches, what the page sends for the socket waits here, so that the
   * stream never takes two ways at once.
   * @typedef {{ ws: WebSocket, mode: 'pending' | 'ws' | 'native', queue: any[], ended: boolean,
   *   upgraded: boolean, timer: number, sent: number, received: number, reported: number }} Bulk
   * @type {Map<number, Bulk>}
   */
  const bulk = new Map();
  const ATTACH_TIMEOUT_MS = 5000;
  const STATS_INTERVAL_MS = 1000;
  const canBulk = typeof WebSocket === 'function';

  function onPort(event) {
    if (pagePort || !event.ports || event.ports.length !== 1) return;
    event.preventDefault(); // tells the MAIN world, synchronously, that the port was taken
    event.stopImmediatePropagation();
    window.removeEventListener(EVT_PORT, onPort, true);
    pagePort = event.ports[0];
    pagePort.onmessage = (message) => fromPage(message.data);
  }
  window.addEventListener(EVT_PORT, onPort, true);
  window.dispatchEvent(new Event(EVT_READY));

  function toPage(message, transfer) {
    if (pagePort) pagePort.postMessage(message, transfer || []);
  }

  function connect() {
    if (background) return background;
    const port = api.runtime.connect({ name: 'direct-sockets' });
    port.onMessage.addListener(fromBackground);
    port.onDisconnect.addListener(() => {
      // The background went away (extension reloaded or updated): fail what was open.
      background = null;
      for (const sid of live) toPage({ op: 'error', sid, name: 'NetworkError', message: 'Network error.' });
      live.clear();
    });
    background = port;
    return port;
  }

  function fromPage(message) {
    if (!message || typeof message !== 'object' || typeof message.sid !== 'number') return;
    const sid = message.sid;
    if (message.op === 'bulk_declined' || message.op === 'bulk_stats') return; // ours to say
    if (message.op === 'open') {
      live.add(sid);
      connect();
      if (message.kind === 'tcp') message = { ...message, bulk: canBulk };
    } else if (!live.has(sid) || !background) {
      return;
    }
    const channel = bulk.get(sid);
    if (channel && message.op !== 'release' && message.op !== 'start_tls') {
      if (channel.mode === 'pending') {
        channel.queue.push(message);
        return;
      }
      if (channel.mode === 'ws') {
        toWebSocket(channel, message);
        return;
      }
    }
    if (message.op === 'release' && channel) endBulk(sid, channel);
    if (message.op === 'start_tls' && typeof message.newSid === 'number') {
      live.add(message.newSid); // the connection goes on under the new id
      live.delete(sid);
      if (channel) channel.upgraded = true; // its WebSocket closes; that is no error
    }
    toBackground(message);
  }

  function toBackground(message) {
    // Bytes cross the page channel as transferred ArrayBuffers and the runtime port as base64
    // (Chrome serialises port messages as JSON).
    const out = { ...message };
    if (out.buf !== undefined) {
      // (No instanceof here: in Firefox the page's ArrayBuffer is another compartment's.)
      out.data = new Uint8Array(out.buf).toBase64();
      delete out.buf;
    }
    background?.postMessage(out);
  }

  // -- the bulk path ---------------------------------------------------------------------------

  /** @param {number} sid @param {{url: string, token: string}} offer */
  function startBulk(sid, offer) {
    /** @type {WebSocket} */
    let ws;
    try {
      ws = new WebSocket(offer.url); // the page's CSP or the browser may refuse it: then native
    } catch (error) {
      background?.postMessage({ op: 'bulk_declined', sid, reason: `WebSocket refused: ${error}` });
      return;
    }
    ws.binaryType = 'arraybuffer';
    /** @type {Bulk} */
    const channel = { ws, mode: 'pending', queue: [], ended: false, upgraded: false, timer: 0, sent: 0, received: 0, reported: 0 };
    bulk.set(sid, channel);
    channel.timer = setTimeout(() => decline(sid, channel, 'the WebSocket did not attach in time'), ATTACH_TIMEOUT_MS);
    ws.onopen = () => ws.send(offer.token);
    ws.onmessage = (event) => {
      if (typeof event.data !== 'string') {
        channel.received += event.data.byteLength;
        toPage({ op: 'data', sid, buf: event.data }, [event.data]);
        return;
      }
      let parsed;
      try {
        parsed = JSON.parse(event.data);
      } catch {
        return;
      }
      const { type, id, detail, code, ...fields } = parsed; // the reason stays out of the page
      if (type === 'attached') {
        if (channel.mode !== 'pending') return;
        clearTimeout(channel.timer);
        channel.mode = 'ws';
        for (const queued of channel.queue.splice(0)) toWebSocket(channel, queued);
        return;
      }
      if (type === 'closed' || type === 'error') {
        channel.ended = true;
        live.delete(sid);
      }
      toPage({ op: type, sid, ...fields });
    };
    ws.onclose = () => {
      clearTimeout(channel.timer);
      if (channel.mode === 'pending') {
        decline(sid, channel, 'the WebSocket was refused or closed before it attached');
        return;
      }
      if (channel.mode === 'ws' && !channel.ended && !channel.upgraded && live.has(sid)) {
        // The host went away (or dropped the socket) without saying how it ended.
        live.delete(sid);
        toPage({ op: 'error', sid, name: 'NetworkError', message: 'Network error.' });
      }
      reportStats(sid, channel);
      bulk.delete(sid);
    };
  }

  function decline(sid, channel, reason) {
    if (channel.mode !== 'pending') return;
    channel.mode = 'native';
    clearTimeout(channel.timer);
    try { channel.ws.close(); } catch { /* not open */ }
    background?.postMessage({ op: 'bulk_declined', sid, reason });
    for (const queued of channel.queue.splice(0)) toBackground(queued);
  }

  function toWebSocket(channel, message) {
    const ws = channel.ws;
    switch (message.op) {
      case 'send':
        channel.sent += message.buf.byteLength;
        ws.send(message.buf);
        return;
      case 'read': ws.send(JSON.stringify({ type: 'read', bytes: message.bytes })); return;
      case 'shutdown': ws.send(JSON.stringify({ type: 'shutdown', abort: !!message.abort })); return;
      case 'cancel': ws.send(JSON.stringify({ type: 'cancel' })); return;
      default: toBackground(message);
    }
  }

  function endBulk(sid, channel) {
    clearTimeout(channel.timer);
    channel.ended = true;
    reportStats(sid, channel);
    try { channel.ws.close(); } catch { /* already closed */ }
    bulk.delete(sid);
  }

  /** The popup's byte counters: the background does not see bulk bytes pass. */
  function reportStats(sid, channel) {
    const total = channel.sent + channel.received;
    if (total === channel.reported || !background) return;
    channel.reported = total;
    background.postMessage({ op: 'bulk_stats', sid, sent: channel.sent, received: channel.received });
  }

  setInterval(() => { for (const [sid, channel] of bulk) reportStats(sid, channel); }, STATS_INTERVAL_MS);

  function fromBackground(message) {
    const { sid, op } = message;
    if (op === 'opened' && message.bulk) {
      const { bulk: offer, ...rest } = message;
      startBulk(sid, offer); // the secret stays in this script: the page never sees it
      toPage(rest);
      return;
    }
    if ((op === 'closed' || op === 'error') && message.bulk) {
      // The page hears of the end on the socket's WebSocket, after its last bytes. This copy
      // counts only if that WebSocket is gone without having said it.
      const channel = bulk.get(sid);
      if (channel && channel.ws.readyState !== WebSocket.CLOSED) return;
      if (channel?.ended || !live.has(sid)) return;
      const { bulk: _, ...rest } = message;
      message = rest;
    }
    if (op === 'accepted') live.add(message.newSid);
    if (op === 'closed' || op === 'error') live.delete(sid);
    if (typeof message.data === 'string') {
      const { data, ...rest } = message;
      const buf = Uint8Array.fromBase64(data).buffer;
      toPage({ ...rest, buf }, [buf]);
      return;
    }
    toPage(message);
  }
})();
