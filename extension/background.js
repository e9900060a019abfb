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
 *   incognito: boolean, sids: Map<number, number>, refusal: string | null}} Frame
 * @typedef {{frame: Frame, sid: number, accepts: Set<number>, kind: string, destination: string,
 *   open: boolean, since: number, sent: number, received: number}} Route
 */

/** @type {chrome.runtime.Port | null} */
let native = null;
let greeted = false;
/** Messages waiting for the host's hello. */
let queued = [];
let nextId = 1;
/** @type {Map<number, Route>} host socket id -> its frame, its page id, and ids it will accept as */
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
  // Every socket that was open is gone with the host: the pages see NetworkError now, and the
  // next socket starts a fresh host.
  for (const [id, route] of routes) {
    route.frame.sids.delete(route.sid);
    safePost(route.frame.port, { op: 'error', sid: route.sid, name: 'NetworkError', message: 'Network error.' });
    routes.delete(id);
  }
  for (const id of [...prompts.keys()]) closePrompt(id);
  windowsOpened.clear(); // the next host starts its count afresh, and so does ours
  for (const respond of grantRequests.values()) respond(null); // the options page says so
  grantRequests.clear();
}

function toHost(message) {
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
    const pending = queued;
    queued = [];
    for (const m of pending) native?.postMessage(m);
    return;
  }
  if (message.type === 'pong') return;
  if (message.type === 'grants') {
    const waiter = grantRequests.get(message.req);
    grantRequests.delete(message.req);
    waiter?.({ grants: message.grants, damaged: message.damaged });
    return;
  }
  if (message.type === 'prompt') {
    showPrompt(message);
    return;
  }
  if (message.type === 'prompt_closed') {
    closePrompt(message.id);
    return;
  }
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

/** The socket ended: drop its routes, and those of connections it was still to accept. */
function forget(id) {
  const entry = routes.get(id);
  if (!entry) return;
  routes.delete(id);
  entry.frame.sids.delete(entry.sid);
  for (const pending of entry.accepts) forget(pending);
  if (entry.open) updateBadge(entry.frame.tabId);
}

// -- seeing and stopping what a site does --------------------------------------------------------

/** Requests from the options page waiting for the host: req -> sendResponse. */
const grantRequests = new Map();
let nextRequest = 1;

/** @type {Array<{when: number, tabId: number, origin: string, kind: string, destination: string, detail: string}>} */
const failures = [];

function remember(route, detail) {
  failures.push({ when: Date.now(), tabId: route.frame.tabId, origin: route.frame.origin, kind: route.kind, destination: route.destination, detail });
  if (failures.length > 50) failures.shift();
}

function openSocketsOf(tabId) {
  return [...routes.entries()].filter(([, r]) => r.open && r.frame.tabId === tabId);
}

function updateBadge(tabId) {
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
    if (native) toHost({ type: 'release', id });
  }
}

function safePost(port, message) {
  try {
    port.postMessage(message);
  } catch {
    // The frame is gone; its onDisconnect releases its sockets.
  }
}

// -- asking the user ----------------------------------------------------------------------------

/**
 * @typedef {{message: any, windowId: number | null, wake: (() => void) | null, openedAt?: number}} Prompt
 * @type {Map<number, Prompt>} host socket id -> the prompt shown (or about to be) for it
 */
const prompts = new Map();
const CONSENT_PAGE = 'consent.html';

// The windows a site may make us open: per origin and per tab, in any minute, whatever the host
// asks (it keeps the same budget, consent.py). Every window counts, the ones withdrawn at once
// included. Kept for as long as the host runs, as the host's own count is. A site's normal and
// private windows count apart: one spending the budget must not show in the other's refusals
// (a timing bit linking the two, questionnaire 2.14).
const WINDOW_BUDGET_MS = 60_000;
const WINDOWS_PER_ORIGIN = 6;
const WINDOWS_PER_TAB = 10;
/** @type {Map<string, number[]>} `normal:<origin>`, `private:<origin>` or `tab:<id>` -> when each window was opened */
const windowsOpened = new Map();

/**
 * Whether a window may open for this origin (in a private window or not) and tab now; if so,
 * it is counted.
 * @param {string} origin @param {boolean} incognito @param {number} tabId
 */
function spendWindow(origin, incognito, tabId) {
  const now = Date.now();
  const keys = [[`${incognito ? 'private' : 'normal'}:${origin}`, WINDOWS_PER_ORIGIN], [`tab:${tabId}`, WINDOWS_PER_TAB]];
  const recent = keys.map(([key]) => (windowsOpened.get(key) ?? []).filter((t) => now - t < WINDOW_BUDGET_MS));
  if (keys.some(([, budget], i) => recent[i].length >= budget)) return false;
  keys.forEach(([key], i) => windowsOpened.set(key, [...recent[i], now]));
  if (windowsOpened.size > 1000) {
    for (const [key, times] of windowsOpened) if (times.every((t) => now - t >= WINDOW_BUDGET_MS)) windowsOpened.delete(key);
  }
  return true;
}

async function showPrompt(message) {
  /** @type {Prompt} */
  const entry = { message, windowId: null, wake: null };
  prompts.set(message.id, entry);
  // Never from a background tab without the user seeing it: wait until the tab is in front.
  const tab = await api.tabs.get(message.tabId).catch(() => null);
  if (tab && !tab.active) {
    await new Promise((resolve) => {
      const onActivated = (info) => {
        if (info.tabId !== message.tabId) return;
        api.tabs.onActivated.removeListener(onActivated);
        resolve(undefined);
      };
      entry.wake = () => { api.tabs.onActivated.removeListener(onActivated); resolve(undefined); };
      api.tabs.onActivated.addListener(onActivated);
    });
  }
  if (prompts.get(message.id) !== entry) return; // answered or withdrawn meanwhile
  // Who asks, as the browser reported the frame that opened the socket (not the host's words).
  const frame = routes.get(message.id)?.frame;
  if (!spendWindow(frame?.origin ?? message.origin, frame?.incognito ?? message.incognito === true, frame?.tabId ?? message.tabId)) {
    console.warn(`direct-sockets: refused a prompt for ${frame?.origin ?? message.origin}: too many windows in a minute`);
    answerPrompt(message.id, 'deny');
    return;
  }
  const created = await api.windows.create({
    url: api.runtime.getURL(`${CONSENT_PAGE}?id=${message.id}`), type: 'popup', width: 500, height: 640, focused: true,
  });
  if (prompts.get(message.id) !== entry) {
    api.windows.remove(created.id).catch(() => {});
    return;
  }
  entry.windowId = created.id ?? null;
  entry.openedAt = Date.now();
}

function closePrompt(id) {
  const entry = prompts.get(id);
  if (!entry) return;
  prompts.delete(id);
  entry.wake?.();
  if (entry.windowId !== null) api.windows.remove(entry.windowId).catch(() => {});
}

const DECISIONS = new Set(['once', 'always', 'session', 'deny']);
const ARM_DELAY_MS = 750; // as consent.js

function answerPrompt(id, decision, host) {
  const entry = prompts.get(id);
  if (!entry || !DECISIONS.has(decision)) return;
  const offered = decision === 'always' ? entry.message.offerAlways : decision === 'session' ? !entry.message.offerAlways : true;
  if (!offered) return;
  closePrompt(id);
  const reply = { type: 'consent', id, decision };
  if (decision !== 'deny' && typeof host === 'string' && host !== entry.message.host) reply.host = host;
  if (native) toHost(reply);
}

// A closed consent window is a refusal.
api.windows.onRemoved.addListener((windowId) => {
  for (const [id, entry] of prompts) {
    if (entry.windowId === windowId) answerPrompt(id, 'deny');
  }
  privateWindowsMayHaveEnded(windowId);
});

/**
 * "Allow until private windows close": when the last private window closes, the host forgets
 * the private session (its grants, its server certificates; it closes what was still open
 * from it) and so do we (the private windows' prompt budget). Asked of the browser on every
 * window closed, as Chromium and Firefox both tell onRemoved but neither says "the last
 * private one". No host running means no private session to forget: a new host starts afresh.
 * @param {number} closedId
 */
async function privateWindowsMayHaveEnded(closedId) {
  if (!native) return;
  const windows = await api.windows.getAll().catch(() => null);
  if (!windows || windows.some((w) => w.incognito && w.id !== closedId)) return;
  for (const key of [...windowsOpened.keys()]) if (key.startsWith('private:')) windowsOpened.delete(key);
  if (native) toHost({ type: 'private_ended' });
}

function fromPage(sender, page) {
  return sender.id === api.runtime.id && typeof sender.url === 'string' && sender.url.startsWith(api.runtime.getURL(page));
}

function fromConsentPage(sender) {
  return fromPage(sender, CONSENT_PAGE);
}

api.runtime.onMessage.addListener((request, sender, sendResponse) => {
  if (!request || typeof request !== 'object') return false;
  if (request.op === 'frame-policy' && sender.id === api.runtime.id && sender.tab) {
    rememberContainerPolicy(sender, request.allow); // from a frame's bridge (an isolated content script)
    return false;
  }
  if (fromPage(sender, 'bulk.html')) {
    // The bulk frame connects only to the host's bulk server, with a secret the host offered:
    // embedded by a page for anything else, it reaches nothing.
    const route = routeOfBulk(request.token);
    if (request.op === 'bulk-check') {
      sendResponse(!!route && route.bulkUrl === request.url && route.open);
    }
    return false;
  }
  // Only the extension's own pages may list or close sockets, or read and answer prompts;
  // content scripts and web pages cannot, whatever they send.
  if (fromPage(sender, 'popup.html')) {
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
    return false;
  }
  if (fromPage(sender, 'options.html')) {
    if (request.op === 'grants-list' || request.op === 'grants-revoke') {
      const req = nextRequest++;
      const message = request.op === 'grants-list'
        ? { type: 'grants_list', req }
        : { type: 'grants_revoke', req, ...pick(request, ['origin', 'kind', 'host', 'port']) };
      grantRequests.set(req, sendResponse);
      toHost(message);
      return true; // answered when the host replies
    }
    return false;
  }
  if (!fromConsentPage(sender)) return false;
  if (request.op === 'prompt-details') {
    sendResponse(prompts.get(request.id)?.message ?? null);
  } else if (request.op === 'prompt-answer') {
    // The window's buttons wait ARM_DELAY_MS once visible and focused (consent.js); an "allow"
    // sooner than that after the window opened is not the user's, whatever the page sent.
    const entry = prompts.get(request.id);
    if (request.decision !== 'deny' && (!entry?.openedAt || Date.now() - entry.openedAt < ARM_DELAY_MS)) {
      sendResponse(false);
      return false;
    }
    answerPrompt(request.id, request.decision, request.host);
    sendResponse(true);
  }
  return false;
});

// -- Permissions-Policy: a document that opts out of direct-sockets gets NotAllowedError -----------

/** `${tabId}:${frameId}` of documents whose Permissions-Policy forbids direct-sockets. */
const forbidden = new Set();

/**
 * Whether a Permissions-Policy header value lets a document of `origin` use direct-sockets.
 * The feature's default allowlist is 'self'; `direct-sockets=()` forbids it, `*` allows it,
 * a list allows it for `self` or the document's own origin.
 */
function policyAllows(value, origin) {
  let depth = 0;
  let start = 0;
  const members = [];
  for (let i = 0; i <= value.length; i++) {
    const c = value[i];
    if (c === '(') depth++;
    else if (c === ')') depth--;
    else if ((c === ',' || c === undefined) && depth === 0) {
      members.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  for (const member of members) {
    const eq = member.indexOf('=');
    if (eq < 0 || member.slice(0, eq).trim() !== 'direct-sockets') continue;
    const allowlist = member.slice(eq + 1).split(';')[0].trim();
    if (allowlist === '*' || allowlist === 'self') return true;
    const items = allowlist.replace(/^\(|\)$/g, '').trim().split(/\s+/).filter(Boolean);
    return items.some((item) => item === '*' || item === 'self' || item === `"${origin}"`);
  }
  return true;
}

// The page's own script can learn the policy synchronously, before any page script runs, from
// a Server-Timing entry the extension adds to the forbidding response (page-api.js reads it at
// document_start). A page can only ever disable the API for itself this way, never enable it.
const FORBIDDEN_TIMING = 'direct-sockets-forbidden';
const IS_FIREFOX = typeof api.runtime.getBrowserInfo === 'function'; // (Chromium has `browser` too)

const FRAMES = { urls: ['<all_urls>'], types: /** @type {any} */ (['main_frame', 'sub_frame']) };

api.webRequest.onHeadersReceived.addListener((details) => {
  const key = `${details.tabId}:${details.frameId}`;
  let origin = 'null';
  try { origin = new URL(details.url).origin; } catch { /* keep null */ }
  const headers = (details.responseHeaders ?? []).filter((h) => h.name.toLowerCase() === 'permissions-policy');
  // Several headers combine: each must allow it.
  const allowed = headers.every((h) => policyAllows(h.value ?? '', origin));
  if (allowed) forbidden.delete(key);
  else forbidden.add(key);
  const timings = IS_FIREFOX ? cspTimings(details.responseHeaders ?? []) : [];
  if (!allowed) timings.push({ name: 'Server-Timing', value: FORBIDDEN_TIMING });
  if (timings.length && IS_FIREFOX) {
    // Firefox: a blocking listener may add the header itself.
    return { responseHeaders: [...(details.responseHeaders ?? []), ...timings] };
  }
  return undefined;
}, FRAMES, IS_FIREFOX ? ['blocking', 'responseHeaders'] : ['responseHeaders']);

if (!IS_FIREFOX) {
  // Chromium: blocking webRequest is gone in MV3; a session rule matching on the response
  // header does the same. (Firefox ignores that condition, so the rule is Chromium's only.)
  // It catches `direct-sockets=()` and lists of other origins; the listener above refuses any
  // other forbidding form when the page first asks.
  const timing = { header: 'Server-Timing', operation: 'append', value: FORBIDDEN_TIMING };
  api.declarativeNetRequest.updateSessionRules({
    removeRuleIds: [1, 2],
    addRules: [
      { id: 1, priority: 1, action: { type: 'modifyHeaders', responseHeaders: [timing] },
        condition: { resourceTypes: FRAMES.types, responseHeaders: [{ header: 'permissions-policy', values: ['*direct-sockets=()*'] }] } },
      { id: 2, priority: 1, action: { type: 'modifyHeaders', responseHeaders: [timing] },
        condition: { resourceTypes: FRAMES.types, responseHeaders: [{ header: 'permissions-policy', values: ['*direct-sockets=("*'] }],
          excludedResponseHeaders: [{ header: 'permissions-policy', values: ['*direct-sockets=(*self*'] }] } },
    ],
  }).catch((error) => console.warn(`direct-sockets: no Permissions-Policy rule: ${error}`));
}

// -- Content-Security-Policy: may the page's workers start from a blob? ------------------------------
// The page's API starts a dedicated worker from a blob that installs the API, unless the page's
// CSP refuses blob: workers; then it starts the worker as asked, without the API (docs/API.md,
// "Workers"). A CSP refusal only shows later, as the worker's failure, so the API must know it
// when the page calls `new Worker`: from the response, through a Server-Timing entry it can read
// at once (as for the Permissions-Policy above). It only ever takes the API away from workers.
const CSP_TIMING = 'direct-sockets-csp';

/** Firefox: each enforced CSP header, whole, for the page's API to read (its own policy). */
function cspTimings(headers) {
  return headers.filter((h) => h.name.toLowerCase() === 'content-security-policy')
    .map((h) => ({ name: 'Server-Timing', value: `${CSP_TIMING};desc="${(h.value ?? '').replace(/[\\"]/g, '\\$&')}"` }));
}

if (!IS_FIREFOX) {
  // Chromium's rules cannot copy a header: they say "refused" where a CSP names a directive
  // that governs workers and allows blob: nowhere. (A blob: allowed by another directive only
  // is missed: docs/API.md says so.)
  api.declarativeNetRequest.updateSessionRules({
    removeRuleIds: [11],
    addRules: [{
      id: 11, priority: 1,
      action: { type: 'modifyHeaders', responseHeaders: [{ header: 'Server-Timing', operation: 'append', value: `${CSP_TIMING};desc="refused"` }] },
      condition: { resourceTypes: FRAMES.types, responseHeaders: [{ header: 'content-security-policy',
        values: ['*worker-src*', '*child-src*', '*script-src*', '*default-src*'], excludedValues: ['*blob:*'] }] },
    }],
  }).catch((error) => console.warn(`direct-sockets: no CSP rule: ${error}`));
}

api.tabs.onRemoved.addListener((tabId) => {
  for (const key of forbidden) if (key.startsWith(`${tabId}:`)) forbidden.delete(key);
  for (const key of containerPolicies.keys()) if (key.startsWith(`${tabId}:`)) containerPolicies.delete(key);
});

// -- who may ask: judged from what the browser says about the sender -----------------------------

/** Whether an origin is potentially trustworthy (a secure context needs it, of the document and
 * of every ancestor): https, or http on this machine's names, as the browsers count them. */
function trustworthy(origin) {
  let url;
  try {
    url = new URL(origin);
  } catch {
    return false;
  }
  if (url.protocol === 'https:' || url.protocol === 'wss:') return true;
  if (url.protocol !== 'http:' && url.protocol !== 'ws:') return false;
  const host = url.hostname;
  return host === 'localhost' || host.endsWith('.localhost') || /^127\.\d+\.\d+\.\d+$/.test(host) || host === '[::1]';
}

/** The origin a frame's URL gives, or null for one that inherits its parent's (about:blank, srcdoc). */
function urlOrigin(url) {
  if (typeof url !== 'string' || url === '' || url.startsWith('about:')) return null;
  try {
    return new URL(url).origin;
  } catch {
    return 'null';
  }
}

/**
 * Whether an iframe's `allow` attribute lets a document of `origin` in it use direct-sockets.
 * The attribute is a list of `feature allowlist` directives separated by ';'; the first naming
 * the feature counts. No allowlist means 'src' (the frame's own origin, which the position
 * rule already makes the parent's); 'none' or a list without this origin forbids it.
 */
function containerAllows(allow, origin) {
  for (const directive of allow.split(';')) {
    const [feature, ...allowlist] = directive.trim().split(/\s+/);
    if (feature !== 'direct-sockets') continue;
    if (allowlist.length === 0) return true;
    return allowlist.some((item) => item === '*' || item === "'src'" || item === "'self'" || item === origin);
  }
  return true;
}

/** Each framed document's container `allow` naming direct-sockets, as its bridge read it when the
 * document started: `${tabId}:${frameId}` -> {allow, at}. For the frames nested inside it. */
const containerPolicies = new Map();
const MAX_CONTAINER_POLICIES = 10000;
const MAX_FRAME_DEPTH = 32;

// A frame's new document brings its own snapshot (or none): the old one goes at the commit.
api.webNavigation.onCommitted.addListener((details) => {
  const key = `${details.tabId}:${details.frameId}`;
  const entry = containerPolicies.get(key);
  if (entry && entry.at <= details.timeStamp) containerPolicies.delete(key);
});

function rememberContainerPolicy(sender, allow) {
  if (typeof allow !== 'string' || !sender.tab || typeof sender.frameId !== 'number' || sender.frameId === 0) return;
  if (containerPolicies.size >= MAX_CONTAINER_POLICIES) containerPolicies.delete(containerPolicies.keys().next().value);
  containerPolicies.set(`${sender.tab.id}:${sender.frameId}`, { allow: allow.slice(0, 4096), at: Date.now() });
}

/**
 * Why the sending frame may not use the API, or null if it may. From the browser's report only:
 * its origin must be potentially trustworthy; every ancestor must have that same origin (no
 * third-party frames, nothing inside one); and the `direct-sockets` policy must allow it at
 * every level: each document's Permissions-Policy header and each container's `allow`, fixed
 * when that document started (the draft's policy-controlled feature, default allowlist 'self').
 * `ownAllow` is the sender's container attribute, as its bridge read it at document start.
 */
async function refusalOf(sender, ownAllow) {
  const origin = originOf(sender);
  if (!trustworthy(origin)) return 'insecure';
  const tabId = sender.tab.id;
  let frameId = sender.frameId ?? 0;
  if (frameId === 0 && urlOrigin(sender.tab.url) !== null && urlOrigin(sender.tab.url) !== origin) return 'position';
  let allow = ownAllow;
  for (let depth = 0; ; depth++) {
    if (forbidden.has(`${tabId}:${frameId}`)) return 'policy';
    if (frameId === 0) return null;
    if (depth >= MAX_FRAME_DEPTH) return 'position';
    if (allow !== null && !containerAllows(allow, origin)) return 'policy';
    const info = await api.webNavigation.getFrame({ tabId, frameId }).catch(() => null);
    if (!info || typeof info.parentFrameId !== 'number' || info.parentFrameId < 0) return 'position';
    frameId = info.parentFrameId;
    const parent = await api.webNavigation.getFrame({ tabId, frameId }).catch(() => null);
    if (!parent) return 'position';
    const parentOrigin = urlOrigin(parent.url);
    if (parentOrigin !== null && parentOrigin !== origin) return 'position';
    allow = containerPolicies.get(`${tabId}:${frameId}`)?.allow ?? null;
  }
}

// -- the frames --------------------------------------------------------------------------------

/** Copies the listed members that are present, and nothing else a frame sent. */
function pick(message, names) {
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

/** The route whose bulk offer carries this secret (for the bulk frame). */
function routeOfBulk(token) {
  if (typeof token !== 'string') return undefined;
  for (const route of routes.values()) if (route.bulkToken === token) return route;
  return undefined;
}

/** Gives a page id its host id, in this frame's table and the router's. */
function addRoute(frame, sid, kind = '', destination = '') {
  const id = nextId++;
  frame.sids.set(sid, id);
  routes.set(id, { frame, sid, accepts: new Set(), kind, destination, open: false, since: Date.now(), sent: 0, received: 0 });
  return id;
}

/** What the popup calls a socket's destination. */
function describe(message) {
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
function base64Bytes(text) {
  if (typeof text !== 'string') return 0;
  return (text.length * 3) / 4 - (text.endsWith('==') ? 2 : text.endsWith('=') ? 1 : 0);
}

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
    if (native) toHost({ type: 'release', id });
    frame.sids.delete(sid);
  }
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
