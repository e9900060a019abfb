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
    if (message.op === 'open') {
      live.add(sid);
      connect().postMessage({
        op: 'open', sid, kind: message.kind,
        remoteAddress: message.remoteAddress, remotePort: message.remotePort, options: message.options,
      });
      return;
    }
    if (!live.has(sid) || !background) return;
    switch (message.op) {
      case 'send':
        background.postMessage({ op: 'send', sid, data: new Uint8Array(message.buf).toBase64() });
        break;
      case 'read':
        background.postMessage({ op: 'read', sid, bytes: message.bytes });
        break;
      case 'shutdown':
        background.postMessage({ op: 'shutdown', sid, abort: !!message.abort });
        break;
      case 'cancel':
      case 'release':
        background.postMessage({ op: message.op, sid });
        break;
    }
  }

  function fromBackground(message) {
    const sid = message.sid;
    if (message.op === 'data') {
      const buf = Uint8Array.fromBase64(message.data).buffer;
      toPage({ op: 'data', sid, buf }, [buf]);
      return;
    }
    if (message.op === 'closed' || message.op === 'error') live.delete(sid);
    toPage(message);
  }
})();
