// @ts-check
// The frames: one runtime port per frame that uses the API, judged once from what the browser
// reports about its sender (policy.js) before anything it asks. What a frame may ask becomes a
// host message under the router's id for its socket; what the host says of a socket goes back
// to the frame that opened it, under the frame's own id. Each frame learns the host's limits
// (from its hello) before any answer to what it asked.

import { api, hostLimits, hostRunning, toHost } from './native.js';
import { originOf, refusalOf } from './policy.js';
import { addRoute, base64Bytes, describe, forget, remember, routes, safePost, updateBadge } from './routes.js';

/** @typedef {import('./routes.js').Frame} Frame */

/** The frames with a port open, to hand each the limits of every host that starts. */
const frames = new Set();

/** The host's limits, for the page's API in this frame (and its workers). */
function sendLimits(frame, limits = hostLimits()) {
  if (limits !== null) safePost(frame.port, { op: 'limits', limits });
}

/** A host said hello: every frame gets its limits before the host answers anything they asked. */
export function hostGreeted(limits) {
  for (const frame of frames) sendLimits(frame, limits);
}

/** The host ended: every socket that was open is gone with it. The pages see NetworkError now,
 * and the next socket starts a fresh host. */
export function hostEnded() {
  for (const [id, route] of routes) {
    route.frame.sids.delete(route.sid);
    safePost(route.frame.port, { op: 'error', sid: route.sid, name: 'NetworkError', message: 'Network error.' });
    routes.delete(id);
  }
}

/** A host message about a socket, for the frame that holds it (and the popup's counters). */
export function fromHost(message) {
  const route = typeof message.id === 'number' ? routes.get(message.id) : undefined;
  if (!route) {
    if (message.type === 'error') console.warn(`direct-sockets: host error ${message.code}: ${message.message}`);
    return;
  }
  const { frame, sid } = route;
  const { type, id, ...fields } = message;
  if (type === 'stats') {
    // A bulk socket's bytes, counted by the host: the popup's counters.
    route.sent = fields.sent;
    route.received = fields.received;
    return;
  }
  // The plain-text half of a STARTTLS socket ends when its secured half opens or fails.
  if (route.upgradedFrom !== undefined && (type === 'opened' || type === 'error')) forget(route.upgradedFrom);
  if (type === 'error') {
    // An error naming a socket ends it. One without a DOM name is a fault in what we sent.
    // The page gets the generic message; the reason is kept for the popup.
    if (fields.detail) remember(route, fields.detail);
    forget(id);
    safePost(frame.port, { op: 'error', sid, name: fields.name ?? 'NetworkError', message: fields.message, ...(fields.bulk ? { bulk: true } : {}) });
    const secured = route.upgradedTo !== undefined ? routes.get(route.upgradedTo) : undefined;
    if (secured && !secured.open) {
      // The host refused to upgrade: the socket startTls() returned fails too.
      forget(route.upgradedTo);
      safePost(frame.port, { op: 'error', sid: secured.sid, name: 'NetworkError', message: 'Network error.' });
    }
    return;
  }
  if (type === 'opened') {
    route.open = true;
    if (fields.bulk) Object.assign(route, { path: 'WebSocket', bulkToken: fields.bulk.token, bulkUrl: fields.bulk.url });
    route.since = Date.now();
    if (route.kind === 'UDP (bound)' || route.kind === 'TCP server') route.destination = `${fields.localAddress}:${fields.localPort}`;
    updateBadge(frame.tabId);
  } else if (type === 'data' || type === 'datagram') {
    route.received += base64Bytes(fields.data);
  } else if (type === 'write_failed') {
    remember(route, `sending failed (${fields.name})`);
  }
  if (type === 'closed') forget(id);
  if (type === 'accepted') {
    const accepted = routes.get(fields.socketId);
    if (!accepted) return;
    accepted.open = true;
    accepted.since = Date.now();
    accepted.destination = `${fields.remoteAddress}:${fields.remotePort}`;
    updateBadge(frame.tabId);
    route.accepts.delete(fields.socketId);
    const { socketId, ...addresses } = fields;
    safePost(frame.port, { op: type, sid, newSid: accepted.sid, ...addresses });
    return;
  }
  safePost(frame.port, { op: type, sid, ...fields });
}


/** Copies the listed members that are present, and nothing else a frame sent. */
export function pick(message, names) {
  const out = {};
  for (const name of names) if (message[name] !== undefined) out[name] = message[name];
  return out;
}

/** What a frame may ask to open, as the host message for it (the sender fields are added). */
const OPENERS = {
  tcp: (m) => ({
    type: 'tcp_open', ...pick(m, ['remoteAddress', 'remotePort', 'options', 'bulkMessageSize']), bulk: m.bulk === true,
  }),
  udp: (m) => ({ type: 'udp_open', ...pick(m, ['mode', 'remoteAddress', 'remotePort', 'localAddress', 'localPort', 'options']) }),
  listen: (m) => ({ type: 'tcp_listen', ...pick(m, ['localAddress', 'localPort', 'backlog', 'ipv6Only', 'secureTransport']) }),
};

/** What a frame may ask of its open sockets, as host messages. */
const OPERATIONS = {
  send: (m) => ({ type: 'send', data: String(m.data) }),
  read: (m) => ({ type: 'read', bytes: m.bytes }),
  shutdown: (m) => ({ type: 'shutdown', abort: !!m.abort }),
  cancel: () => ({ type: 'cancel' }),
  release: () => ({ type: 'release' }),
  udp_send: (m) => ({ type: 'udp_send', data: String(m.data), ...pick(m, ['remoteAddress', 'remotePort', 'dnsQueryType']) }),
  udp_read: (m) => ({ type: 'udp_read', datagrams: m.datagrams }),
  join: (m) => ({ type: 'join', ...pick(m, ['req', 'groupAddress', 'sourceAddress']) }),
  leave: (m) => ({ type: 'leave', ...pick(m, ['req', 'groupAddress', 'sourceAddress']) }),
  bulk_declined: (m) => ({ type: 'bulk_declined', reason: BULK_DECLINED[m.reason] ?? BULK_DECLINED.refused }),
};

/** Why a socket's stream stayed on native messaging, in the popup's words (the page only
 * picks one of these; it cannot put its own text in trusted UI). */
const BULK_DECLINED = {
  'no-frame': 'the bulk frame could not be used here',
  timeout: 'its WebSocket did not attach in time',
  refused: 'its WebSocket was refused',
  unconfirmed: 'the host did not confirm its WebSocket',
};

/** What a frame asks, once judged: a host message for its own socket, or nothing. */
function fromFrame(frame, message) {
  if (!message || typeof message !== 'object' || !Number.isSafeInteger(message.sid)) return;
  if (message.op === 'open') {
    const open = Object.hasOwn(OPENERS, message.kind) ? OPENERS[message.kind] : undefined;
    if (frame.sids.has(message.sid) || !open) return;
    if (frame.refusal !== null) {
      // Not a secure context, a third-party position, or a Permissions-Policy (header or
      // `allow`) that forbids it: refused here, never asked; the page's API now throws for every
      // later constructor.
      safePost(frame.port, { op: 'error', sid: message.sid, name: 'NotAllowedError', message: 'Permission denied.', policy: true });
      return;
    }
    const id = addRoute(frame, message.sid, ...describe(message));
    toHost({ ...open(message), id, origin: frame.origin, tabId: frame.tabId, frameId: frame.frameId, incognito: frame.incognito });
    return;
  }
  const id = frame.sids.get(message.sid);
  if (id === undefined) return;
  if (message.op === 'accept') {
    // The connection's page id is chosen now; its host id too, before the host accepts it.
    if (!Number.isSafeInteger(message.newSid) || frame.sids.has(message.newSid)) return;
    const socketId = addRoute(frame, message.newSid, 'TCP (accepted)', '');
    routes.get(id).accepts.add(socketId);
    toHost({ type: 'accept', id, socketId });
    return;
  }
  if (message.op === 'start_tls') {
    // STARTTLS: the connection goes on as a new socket, whose id the page chose.
    if (!Number.isSafeInteger(message.newSid) || frame.sids.has(message.newSid)) return;
    const old = routes.get(id);
    const secured = addRoute(frame, message.newSid, 'TCP (STARTTLS)', old?.destination ?? '');
    Object.assign(routes.get(secured), { upgradedFrom: id, sent: old?.sent ?? 0, received: old?.received ?? 0 });
    if (old) old.upgradedTo = secured;
    const options = message.options && typeof message.options === 'object' ? message.options : {};
    toHost({ type: 'start_tls', id, newId: secured, options: pick(options, ['alpn', 'caCertificates', 'pinnedCertificates', 'serverName']) });
    return;
  }
  if (message.op === 'bulk_declined') {
    const entry = routes.get(id);
    if (entry) entry.path = `native messaging (${BULK_DECLINED[message.reason] ?? BULK_DECLINED.refused})`;
  }
  const build = Object.hasOwn(OPERATIONS, message.op) ? OPERATIONS[message.op] : undefined;
  if (!build) return;
  if (message.op === 'release') forget(id);
  const entry = routes.get(id);
  if (entry && (message.op === 'send' || message.op === 'udp_send')) entry.sent += base64Bytes(message.data);
  toHost({ ...build(message), id });
}

function frameGone(frame) {
  // Navigation, reload, a closed tab or a removed frame: its sockets close in the host.
  for (const [sid, id] of frame.sids) {
    routes.delete(id);
    if (hostRunning()) toHost({ type: 'release', id });
    frame.sids.delete(sid);
  }
  frames.delete(frame);
  updateBadge(frame.tabId);
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
    refusal: 'unjudged',
  };
  frames.add(frame);
  sendLimits(frame); // a host already greeted; else its hello brings them
  // The bridge's first message is its container's `allow` as it was when the document started;
  // the frame is judged once, from `sender` and the frames around it, before anything it asks.
  /** @type {Promise<void> | null} */
  let judged = null;
  port.onMessage.addListener((message) => {
    if (judged === null) {
      const allow = message?.op === 'frame-policy' && typeof message.allow === 'string' ? message.allow : null;
      judged = refusalOf(sender, allow).then(
        (refusal) => { frame.refusal = refusal; },
        () => { frame.refusal = 'position'; },
      );
      if (message?.op === 'frame-policy') return;
    }
    judged.then(() => fromFrame(frame, message));
  });
  port.onDisconnect.addListener(() => frameGone(frame));
});
