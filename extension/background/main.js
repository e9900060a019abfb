// @ts-check
// The extension's background (Chromium's service worker, Firefox's background scripts), as
// modules by role: native.js (the port to the host and its hello), policy.js (who may ask,
// from what the browser says about the sender), frames.js (the frames' ports and their
// sockets' messages), routes.js (the socket table and the popup's view of it), consent.js (the
// consent windows and their budgets). This module joins them: where each host message goes,
// what happens when the host ends, and which extension page may ask what.

import { api, onHost, toHost } from './native.js';
import { rememberContainerPolicy } from './policy.js';
import * as frames from './frames.js';
import { popupRequest, routeOfBulk } from './routes.js';
import * as consent from './consent.js';

/** Requests from the options page waiting for the host: req -> sendResponse. */
const grantRequests = new Map();
let nextRequest = 1;

onHost({
  hello: frames.hostGreeted,
  message(message) {
    if (message.type === 'grants') {
      const waiter = grantRequests.get(message.req);
      grantRequests.delete(message.req);
      waiter?.({ grants: message.grants, damaged: message.damaged });
    } else if (message.type === 'prompt') {
      consent.showPrompt(message);
    } else if (message.type === 'prompt_closed') {
      consent.closePrompt(message.id);
    } else {
      frames.fromHost(message);
    }
  },
  gone() {
    frames.hostEnded();
    consent.hostEnded();
    for (const respond of grantRequests.values()) respond(null); // the options page says so
    grantRequests.clear();
  },
});

/** Whether a message comes from this extension page (the browser says so, not the message). */
function fromPage(sender, page) {
  return sender.id === api.runtime.id && typeof sender.url === 'string' && sender.url.startsWith(api.runtime.getURL(page));
}

/** The options page's grants: listed and revoked by the host, which keeps them. */
function optionsRequest(request, sendResponse) {
  if (request.op !== 'grants-list' && request.op !== 'grants-revoke') return false;
  const req = nextRequest++;
  const message = request.op === 'grants-list'
    ? { type: 'grants_list', req }
    : { type: 'grants_revoke', req, ...frames.pick(request, ['origin', 'kind', 'host', 'port']) };
  grantRequests.set(req, sendResponse);
  toHost(message);
  return true; // answered when the host replies
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
    if (request.op === 'bulk-check') sendResponse(!!route && route.bulkUrl === request.url && route.open);
    return false;
  }
  // Only the extension's own pages may list or close sockets, or read and answer prompts;
  // content scripts and web pages cannot, whatever they send.
  if (fromPage(sender, 'popup.html')) popupRequest(request, sendResponse);
  else if (fromPage(sender, 'options.html')) return optionsRequest(request, sendResponse);
  else if (fromPage(sender, consent.CONSENT_PAGE)) consent.consentRequest(request, sendResponse);
  return false;
});
