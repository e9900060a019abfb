// @ts-check
// Asking the user: the consent windows the host asks for, shown only when the asking tab is in
// front, within a budget of windows per site and per tab (whatever the host asks), armed only
// after 0.75 s in view; and the end of a private session when its last window closes
// (docs/SECURITY.md, 2.11 and 2.14).

import { api, hostRunning, toHost } from './native.js';
import { routes } from './routes.js';

/**
 * @typedef {{message: any, windowId: number | null, wake: (() => void) | null, openedAt?: number}} Prompt
 * @type {Map<number, Prompt>} host socket id -> the prompt shown (or about to be) for it
 */
const prompts = new Map();
export const CONSENT_PAGE = 'consent.html';

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

export async function showPrompt(message) {
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
    url: api.runtime.getURL(`${CONSENT_PAGE}?id=${message.id}&prompt=${message.promptId}`), type: 'popup', width: 500, height: 640, focused: true,
  });
  if (prompts.get(message.id) !== entry) {
    api.windows.remove(created.id).catch(() => {});
    return;
  }
  entry.windowId = created.id ?? null;
  entry.openedAt = Date.now();
}

export function closePrompt(id) {
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
  // The host's prompt id goes back with the answer: a socket asks one thing after another, and
  // an answer to one that closed meanwhile must not land on the next (the host checks it too).
  const offered = decision === 'always' ? entry.message.offerAlways : decision === 'session' ? !entry.message.offerAlways : true;
  if (!offered) return;
  closePrompt(id);
  const reply = { type: 'consent', id, promptId: entry.message.promptId, decision };
  if (decision !== 'deny' && typeof host === 'string' && host !== entry.message.host) reply.host = host;
  if (hostRunning()) toHost(reply);
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
  if (!hostRunning()) return;
  const windows = await api.windows.getAll().catch(() => null);
  if (!windows || windows.some((w) => w.incognito && w.id !== closedId)) return;
  for (const key of [...windowsOpened.keys()]) if (key.startsWith('private:')) windowsOpened.delete(key);
  if (hostRunning()) toHost({ type: 'private_ended' });
}

/** The host ended: its prompts are gone, and the next host counts windows afresh, as we do. */
export function hostEnded() {
  for (const id of [...prompts.keys()]) closePrompt(id);
  windowsOpened.clear();
}

/** What the consent window asks: what to show, and the user's answer. */
export function consentRequest(request, sendResponse) {
  // A window answers the prompt it shows, not a later one of the same socket.
  const entry = prompts.get(request.id);
  const shown = entry && entry.message.promptId === request.promptId ? entry : null;
  if (request.op === 'prompt-details') {
    sendResponse(shown?.message ?? null);
  } else if (request.op === 'prompt-answer') {
    // The window's buttons wait ARM_DELAY_MS once visible and focused (consent.js); an "allow"
    // sooner than that after the window opened is not the user's, whatever the page sent.
    if (!shown || (request.decision !== 'deny' && (!shown.openedAt || Date.now() - shown.openedAt < ARM_DELAY_MS))) {
      sendResponse(false);
      return;
    }
    answerPrompt(request.id, request.decision, request.host);
    sendResponse(true);
  }
}
