// @ts-check
// The one native port to the host, shared by every tab, and its hello. The host is started by
// the first message for it and said hello to first; what is sent before its hello arrives
// waits. The hello's `limits` (the host's wire limits, docs/PROTOCOL.md) are kept here for the
// page APIs, which take every such number from the host rather than from a copy of their own.

export const api = globalThis.browser ?? globalThis.chrome;
const HOST_NAME = 'direct_sockets';
const PROTOCOL_VERSION = 1;

/** @type {chrome.runtime.Port | null} */
let native = null;
let greeted = false;
/** Messages waiting for the host's hello. */
let queued = [];
/** The last hello's `limits`, as the host sent them (the page APIs check them), or null. */
let limits = null;

/** What the rest of the background does with the host's messages and its end (see main.js). */
const handlers = {
  /** @type {(message: any) => void} */ message: () => {},
  /** @type {(limits: object | null) => void} */ hello: () => {},
  /** @type {() => void} */ gone: () => {},
};

/** @param {Partial<typeof handlers>} given */
export function onHost(given) {
  Object.assign(handlers, given);
}

/** Whether a host is running (or starting): there is a session to tell things to. */
export function hostRunning() {
  return native !== null;
}

/** The host's limits from its last hello; null before any hello, or when it sent none. */
export function hostLimits() {
  return limits;
}

function connectNative() {
  if (native) return native;
  const port = api.runtime.connectNative(HOST_NAME);
  native = port;
  greeted = false;
  port.onMessage.addListener(fromHost);
  port.onDisconnect.addListener(() => {
    hostGone(port, api.runtime.lastError?.message ?? port.error?.message ?? 'disconnected');
  });
  port.postMessage({ type: 'hello', version: PROTOCOL_VERSION });
  return port;
}

function hostGone(port, reason) {
  if (native !== port) return; // already handled
  console.warn(`direct-sockets: native host gone: ${reason}`);
  native = null;
  queued = [];
  limits = null; // the next host says its own
  handlers.gone();
}

/** Sends to the host, starting it (and waiting for its hello) if need be. */
export function toHost(message) {
  const port = connectNative();
  if (!greeted) {
    queued.push(message);
    return;
  }
  try {
    port.postMessage(message);
  } catch {
    // The host died a moment ago and onDisconnect has not run yet: start a fresh one.
    hostGone(port, 'disconnected');
    toHost(message);
  }
}

function fromHost(message) {
  if (message.type === 'hello') {
    greeted = true;
    limits = message.limits && typeof message.limits === 'object' ? message.limits : null;
    if (limits === null) console.warn('direct-sockets: the host sent no limits in its hello: pages cannot use it');
    // The frames learn the limits before anything the host answers to what they asked.
    handlers.hello(limits);
    const pending = queued;
    queued = [];
    for (const m of pending) native?.postMessage(m);
    return;
  }
  if (message.type === 'pong') return;
  handlers.message(message);
}
