// @ts-check
// The socket table: every socket a frame opened, under the router's own id on the native port
// (so a frame can only ever name its own sockets), with what the popup shows of it (its kind,
// destination, bytes each way, the transport its stream took) and the reasons sockets failed,
// which pages never see (docs/SECURITY.md, 2.2).

import { api, hostRunning, toHost } from './native.js';

/**
 * @typedef {{port: chrome.runtime.Port, origin: string, tabId: number, frameId: number,
 *   incognito: boolean, sids: Map<number, number>, refusal: string | null}} Frame
 * @typedef {{frame: Frame, sid: number, accepts: Set<number>, kind: string, destination: string,
 *   open: boolean, since: number, sent: number, received: number, path?: string,
 *   bulkToken?: string, bulkUrl?: string, upgradedFrom?: number, upgradedTo?: number}} Route
 */

let nextId = 1;
/** @type {Map<number, Route>} host socket id -> its frame, its page id, and ids it will accept as */
export const routes = new Map();

/** Gives a page id its host id, in this frame's table and the router's. */
export function addRoute(frame, sid, kind = '', destination = '') {
  const id = nextId++;
  frame.sids.set(sid, id);
  routes.set(id, { frame, sid, accepts: new Set(), kind, destination, open: false, since: Date.now(), sent: 0, received: 0 });
  return id;
}

/** The socket ended: drop its routes, and those of connections it was still to accept. */
export function forget(id) {
  const entry = routes.get(id);
  if (!entry) return;
  routes.delete(id);
  entry.frame.sids.delete(entry.sid);
  for (const pending of entry.accepts) forget(pending);
  if (entry.open) updateBadge(entry.frame.tabId);
}

/** The route whose bulk offer carries this secret (for the bulk frame). */
export function routeOfBulk(token) {
  if (typeof token !== 'string') return undefined;
  for (const route of routes.values()) if (route.bulkToken === token) return route;
  return undefined;
}

export function safePost(port, message) {
  try {
    port.postMessage(message);
  } catch {
    // The frame is gone; its onDisconnect releases its sockets.
  }
}

// -- what the popup shows ------------------------------------------------------------------------

/** @type {Array<{when: number, tabId: number, origin: string, kind: string, destination: string, detail: string}>} */
const failures = [];

export function remember(route, detail) {
  failures.push({ when: Date.now(), tabId: route.frame.tabId, origin: route.frame.origin, kind: route.kind, destination: route.destination, detail });
  if (failures.length > 50) failures.shift();
}

function openSocketsOf(tabId) {
  return [...routes.entries()].filter(([, r]) => r.open && r.frame.tabId === tabId);
}

export function updateBadge(tabId) {
  const count = openSocketsOf(tabId).length;
  api.action.setBadgeText({ tabId, text: count ? String(count) : '' }).catch(() => {});
}

/** The user closed sockets from the popup: the page sees NetworkError, the host closes them. */
function closeSockets(ids) {
  for (const id of ids) {
    const route = routes.get(id);
    if (!route) continue;
    remember(route, 'closed by the user');
    forget(id);
    safePost(route.frame.port, { op: 'error', sid: route.sid, name: 'NetworkError', message: 'Network error.' });
    if (hostRunning()) toHost({ type: 'release', id });
  }
}

/** What the popup calls a socket's destination. */
export function describe(message) {
  switch (message.kind) {
    case 'tcp': return [message.options?.secureTransport === 'on' ? 'TCP (TLS)' : 'TCP', `${message.remoteAddress}:${message.remotePort}`];
    case 'udp': return message.mode === 'connected'
      ? ['UDP', `${message.remoteAddress}:${message.remotePort}`]
      : ['UDP (bound)', `${message.localAddress}:${message.localPort ?? 'any'}`];
    case 'listen': return [message.secureTransport === 'on' ? 'TCP server (TLS)' : 'TCP server', `${message.localAddress}:${message.localPort ?? 'any'}`];
    default: return [String(message.kind), ''];
  }
}

/** Bytes in a base64 string, for the popup's counters. */
export function base64Bytes(text) {
  if (typeof text !== 'string') return 0;
  return (text.length * 3) / 4 - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0);
}

/** What the toolbar popup asks: the tab's open sockets and its recent failures, or to close some. */
export function popupRequest(request, sendResponse) {
  if (request.op === 'sockets') {
    sendResponse({
      sockets: openSocketsOf(request.tabId).map(([id, r]) => ({
        id, origin: r.frame.origin, kind: r.kind, destination: r.destination, sent: r.sent, received: r.received, since: r.since,
        path: r.path ?? 'native messaging',
      })),
      failures: failures.filter((f) => f.tabId === request.tabId).slice(-10).reverse(),
    });
  } else if (request.op === 'close-sockets' && Array.isArray(request.ids)) {
    closeSockets(request.ids);
    sendResponse(true);
  }
}
