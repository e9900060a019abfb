// @ts-check
// Who may ask, judged only from what the browser says about the sender (never from what a
// frame sends): a potentially trustworthy origin, no third-party position, and the
// `direct-sockets` policy-controlled feature allowed at every level of nesting (each
// document's Permissions-Policy header, each container's `allow`). The page's API learns a
// forbidding header, and a CSP that refuses blob: workers, at once through a Server-Timing
// entry added to the response (docs/SECURITY.md, 2.13; docs/API.md, "Workers").

import { api } from './native.js';

/** The origin the browser reports for a sender (a frame's port, an extension page). */
export function originOf(sender) {
  if (typeof sender.origin === 'string') return sender.origin;
  try {
    return new URL(sender.url).origin;
  } catch {
    return 'null';
  }
}

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

export function rememberContainerPolicy(sender, allow) {
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
export async function refusalOf(sender, ownAllow) {
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

// A closed tab's documents are gone: so are their policies.
api.tabs.onRemoved.addListener((tabId) => {
  for (const key of forbidden) if (key.startsWith(`${tabId}:`)) forbidden.delete(key);
  for (const key of containerPolicies.keys()) if (key.startsWith(`${tabId}:`)) containerPolicies.delete(key);
});
