// @ts-check
// The router: one native port to the host for every tab, and one runtime port per frame that
// uses the API. Who is asking (origin, tab, frame, private window) comes from what the browser
// reports about the sender of the frame's port, never from message contents. Socket ids on the
// native port are the router's own, so a frame can only ever name its own sockets.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;
const HOST_NAME = 'direct_sockets';
const PROTOCOL_VERSION = 1;

/**
 * @typedef {{port: chrome.runtime.Port, origin: string, tabId: number, frameId: number,
 *   incognito: boolean, sids: Map<number, number>}} Frame
 */

/** @type {chrome.runtime.Port | null} */
let native = null;
let greeted = false;
/** Messages waiting for the host's hello. */
let queued = [];
let nextId = 1;
/** @type {Map<number, {frame: Frame, sid: number}>} host socket id -> its frame and page id */
const routes = new Map();

function originOf(sender) {
  if (typeof sender.origin === 'string') return sender.origin;
  try {
    return new URL(sender.url).origin;
  } catch {
    return 'null';
  }
}

// -- the native side ---------------------------------------------------------------------------

function connectNative() {
  if (native) return native;
  const port = api.runtime.connectNative(HOST_NAME);
  native = port;
  greeted = false;
  port.onMessage.addListener(fromHost);
  port.onDisconnect.addListener(() => {
    const reason = api.runtime.lastError?.message ?? port.error?.message ?? 'disconnected';
    console.warn(`direct-sockets: native host gone: ${reason}`);
    if (native === port) native = null;
    queued = [];
    // Every socket that was open is gone with the host: the pages see NetworkError now, and the
    // next socket starts a fresh host.
    for (const [id, route] of routes) {
      route.frame.sids.delete(route.sid);
      safePost(route.frame.port, { op: 'error', sid: route.sid, name: 'NetworkError', message: 'Network error.' });
      routes.delete(id);
    }
  });
  port.postMessage({ type: 'hello', version: PROTOCOL_VERSION });
  return port;
}

function toHost(message) {
  const port = connectNative();
  if (greeted) port.postMessage(message);
  else queued.push(message);
}

function fromHost(message) {
  if (message.type === 'hello') {
    greeted = true;
    const pending = queued;
    queued = [];
    for (const m of pending) native?.postMessage(m);
    return;
  }
  if (message.type === 'pong') return;
  const route = typeof message.id === 'number' ? routes.get(message.id) : undefined;
  if (!route) {
    if (message.type === 'error') console.warn(`direct-sockets: host error ${message.code}: ${message.message}`);
    return;
  }
  const { frame, sid } = route;
  const { type, id, ...fields } = message;
  if (type === 'error') {
    // An error naming a socket ends it. One without a DOM name is a fault in what we sent.
    forget(id);
    safePost(frame.port, { op: 'error', sid, name: fields.name ?? 'NetworkError', message: fields.message });
    return;
  }
  if (type === 'closed') forget(id);
  safePost(frame.port, { op: type, sid, ...fields });
}

function forget(id) {
  const route = routes.get(id);
  if (!route) return;
  routes.delete(id);
  route.frame.sids.delete(route.sid);
}

function safePost(port, message) {
  try {
    port.postMessage(message);
  } catch {
    // The frame is gone; its onDisconnect releases its sockets.
  }
}

// -- the frames --------------------------------------------------------------------------------

const PASS_THROUGH = {
  send: (m) => ({ data: String(m.data) }),
  read: (m) => ({ bytes: m.bytes }),
  shutdown: (m) => ({ abort: !!m.abort }),
  cancel: () => ({}),
  release: () => ({}),
};

function fromFrame(frame, message) {
  if (!message || typeof message !== 'object' || !Number.isSafeInteger(message.sid)) return;
  if (message.op === 'open') {
    if (frame.sids.has(message.sid) || message.kind !== 'tcp') return;
    const id = nextId++;
    frame.sids.set(message.sid, id);
    routes.set(id, { frame, sid: message.sid });
    toHost({
      type: 'tcp_open', id,
      origin: frame.origin, tabId: frame.tabId, frameId: frame.frameId, incognito: frame.incognito,
      remoteAddress: message.remoteAddress, remotePort: message.remotePort, options: message.options,
    });
    return;
  }
  const id = frame.sids.get(message.sid);
  const build = Object.hasOwn(PASS_THROUGH, message.op) ? PASS_THROUGH[message.op] : undefined;
  if (id === undefined || !build) return;
  if (message.op === 'release') forget(id);
  toHost({ type: message.op, id, ...build(message) });
}

function frameGone(frame) {
  // Navigation, reload, a closed tab or a removed frame: its sockets close in the host.
  for (const [sid, id] of frame.sids) {
    routes.delete(id);
    if (native) toHost({ type: 'release', id });
    frame.sids.delete(sid);
  }
}

api.runtime.onConnect.addListener((port) => {
  const sender = port.sender;
  if (port.name !== 'direct-sockets' || !sender || !sender.tab || sender.id !== api.runtime.id) {
    port.disconnect();
    return;
  }
  /** @type {Frame} */
  const frame = {
    port,
    origin: originOf(sender),
    tabId: sender.tab.id ?? -1,
    frameId: sender.frameId ?? 0,
    incognito: !!sender.tab.incognito,
    sids: new Map(),
  };
  port.onMessage.addListener((message) => fromFrame(frame, message));
  port.onDisconnect.addListener(() => frameGone(frame));
});
