// @ts-check
// The isolated content script of one frame: it carries messages between the page's API (MAIN
// world, over a private MessagePort) and the background (over a runtime port). The page's world
// is untrusted: anything may post to us there, so the rules a page cannot be trusted to keep are
// checked again here, from this world, where the page cannot redefine what we read (secure
// context, frame position), and once more in the background from what the browser says about
// the sender (docs/SECURITY.md, "Threat model: extension boundary").
(() => {
  'use strict';
  const api = globalThis.browser ?? globalThis.chrome;
  const EVT_PORT = 'direct-sockets:port';
  const EVT_READY = 'direct-sockets:bridge-ready';

  // Not a secure context: the API is absent, and nothing here listens for a channel, whatever
  // the page dispatches (an insecure page or frame could otherwise hand us a port of its own).
  if (!globalThis.isSecureContext) return;

  /**
   * Whether this frame's position allows the API: the top level, or a frame whose every
   * ancestor has this frame's origin (a cross-origin or opaque ancestor throws on access).
   * Read from this world: a page cannot redefine `parent`, `top` or `location` for us.
   */
  function positionAllowed() {
    try {
      const origin = location.origin;
      for (let w = /** @type {Window} */ (window); w !== w.top;) {
        w = /** @type {Window} */ (w.parent);
        if (w.location.origin !== origin) return false;
      }
      return true;
    } catch {
      return false;
    }
  }
  const allowed = positionAllowed();

  // The container's `allow` attribute as it is now, at this document's start: the frame's
  // policy is fixed when it navigates, whatever the parent does to the attribute later. Only an
  // attribute that names the feature matters (the background combines it with every ancestor's).
  let containerAllow = null;
  try {
    const value = window.frameElement?.getAttribute('allow') ?? null;
    if (value !== null && value.includes('direct-sockets')) containerAllow = value.slice(0, 4096);
  } catch { /* a cross-origin container: refused by position anyway */ }
  if (containerAllow !== null) {
    // For frames nested inside this one, which the background judges through their ancestors.
    api.runtime.sendMessage({ op: 'frame-policy', allow: containerAllow }).catch(() => {});
  }

  /** @type {MessagePort | null} */
  let pagePort = null;
  /** @type {chrome.runtime.Port | null} */
  let background = null;
  /** Sockets of this frame that the background knows about. */
  const live = new Set();
  const firefox = api.runtime.getURL('').startsWith('moz-extension:');
  // The most bytes in one WebSocket message on the bulk path, each way (docs/BULK.md, measured):
  // Firefox's parent process relays every message to the page's process and pays far more per
  // byte above 64 KiB; Chromium does best with the largest.
  const BULK_MESSAGE_SIZE = firefox ? 64 * 1024 : 1024 * 1024;

  function onPort(event) {
    if (pagePort || !event.ports || event.ports.length !== 1) return;
    event.preventDefault(); // tells the MAIN world, synchronously, that the port was taken
    event.stopImmediatePropagation();
    window.removeEventListener(EVT_PORT, onPort, true);
    pagePort = event.ports[0];
    pagePort.onmessage = (message) => fromPage(message.data);
    // Where the bulk path's frame is (docs/BULK.md): the page's API embeds it when a socket
    // is offered a WebSocket.
    // The page's own WebSocket is tried first where no Local Network Access prompt can hold it:
    // Firefox has none; Chromium applies it to public pages (measured), so there only
    // loopback pages try their own (docs/BULK.md).
    const loopbackPage = /^(localhost|127\.\d+\.\d+\.\d+|\[::1\])$/.test(location.hostname);
    // Firefox gets no extension bulk frame: its URL carries the extension's per-install UUID,
    // which a page could read (from this message, or the frame's src in its DOM) and use to
    // follow the user across sites (questionnaire 2.6). It gets the host's own frame instead
    // (bulkHostFrame), served on loopback, for its workers, whose own WebSockets stall while their
    // page is busy (docs/BULK.md). Chromium's ID is the same for every install (the manifest's
    // key): it names the extension, which the API's presence already does.
    pagePort.postMessage({
      op: 'config', bulkFrame: firefox ? null : api.runtime.getURL('bulk.html'), bulkHostFrame: firefox,
      bulkDirectFirst: firefox || loopbackPage, bulkMessageSize: BULK_MESSAGE_SIZE,
    });
  }
  window.addEventListener(EVT_PORT, onPort, true);
  window.dispatchEvent(new Event(EVT_READY));

  function toPage(message, transfer) {
    if (pagePort) pagePort.postMessage(message, transfer || []);
  }

  function connect() {
    if (background) return background;
    const port = api.runtime.connect({ name: 'direct-sockets' });
    port.postMessage({ op: 'frame-policy', allow: containerAllow });
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
    if (message.op === 'open' && !allowed) {
      // A third-party frame (or one inside one): refused here, the background never hears.
      toPage({ op: 'error', sid, name: 'NotAllowedError', message: 'Permission denied.', policy: true });
      return;
    }
    if (message.op === 'open') {
      live.add(sid);
      connect();
      if (message.kind === 'tcp') message = { ...message, bulk: true, bulkMessageSize: BULK_MESSAGE_SIZE };
    } else if (!live.has(sid) || !background) {
      return;
    }
    if (message.op === 'start_tls' && typeof message.newSid === 'number') {
      live.add(message.newSid); // the connection goes on under the new id
      live.delete(sid);
    }
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

  function fromBackground(message) {
    const { sid, op } = message;
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
