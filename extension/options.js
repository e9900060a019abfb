// @ts-check
// The options page: every remembered destination, grouped by site, each one revocable, and each
// site's all at once. The host's permission store is the only copy; this page asks the host.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;

// A name's grant covers what it resolved to when the user allowed it, and anything less
// sensitive: never a later answer closer to the user (DNS rebinding).
const SCOPE_NOTES = {
  internet: ' (while it is on the internet)',
  local: ' (while it is on your local network or the internet)',
  loopback: ' (on this device, your local network or the internet)',
};
const KINDS = { tcp: 'TCP to', udp: 'UDP with', 'udp-bind': 'UDP on this device at', 'tcp-listen': 'TCP server on this device at', multicast: 'multicast group', certificate: 'TLS certificate trusted at' };

function destination(grant) {
  if (grant.kind === 'multicast') return grant.host;
  const host = grant.host.includes(':') ? `[${grant.host}]` : grant.host;
  return `${host}:${grant.port === '*' ? 'any port' : grant.port}`;
}

function render(answer) {
  const { grants, damaged } = answer ?? { grants: [], damaged: false };
  /** @type {HTMLElement} */ (document.getElementById('unavailable')).hidden = answer !== null;
  /** @type {HTMLElement} */ (document.getElementById('damaged')).hidden = !damaged;
  /** @type {HTMLElement} */ (document.getElementById('empty')).hidden = !(answer && !damaged && grants.length === 0);
  const bySite = new Map();
  for (const grant of grants) {
    if (!bySite.has(grant.origin)) bySite.set(grant.origin, []);
    bySite.get(grant.origin).push(grant);
  }
  const sites = /** @type {HTMLElement} */ (document.getElementById('sites'));
  sites.replaceChildren();
  for (const [origin, list] of bySite) {
    const section = document.createElement('section');
    section.dataset.origin = origin;
    const heading = document.createElement('h2');
    heading.textContent = origin;
    const table = document.createElement('table');
    for (const grant of list) {
      const row = table.insertRow();
      row.insertCell().textContent = KINDS[grant.kind] ?? grant.kind;
      row.insertCell().textContent = destination(grant) + (SCOPE_NOTES[grant.scope] ?? '')
        + (grant.pin ? ` (key ${grant.pin})` : '');
      const button = document.createElement('button');
      button.textContent = 'Revoke';
      button.className = 'revoke';
      button.addEventListener('click', () => request({ op: 'grants-revoke', origin, kind: grant.kind, host: grant.host, port: grant.port }));
      row.insertCell().append(button);
    }
    const all = document.createElement('button');
    all.textContent = 'Revoke all for this site';
    all.className = 'revoke-site';
    all.addEventListener('click', () => request({ op: 'grants-revoke', origin }));
    section.append(heading, table, all);
    sites.append(section);
  }
  document.body.dataset.ready = 'true';
}

function request(message) {
  return api.runtime.sendMessage(message).then(render, () => render(null));
}

request({ op: 'grants-list' });
