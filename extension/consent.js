// @ts-check
// The consent window: trusted extension UI, opened by the background for one socket. It shows
// what the host reported (the requesting origin as the browser gave it, the destination, what it
// resolves to, the port's service, the network it is on) and sends back the user's answer.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;
const query = new URLSearchParams(location.search);
const id = Number(query.get('id'));
// Which of this socket's prompts this window shows: an answer is for that one only.
const promptId = Number(query.get('prompt'));

const ACTIONS = {
  tcp: 'wants to open a TCP connection to',
  udp: 'wants to exchange UDP datagrams with',
  'udp-bind': 'wants to receive UDP datagrams on this device at',
  'tcp-listen': 'wants to accept TCP connections on this device at',
  multicast: 'wants to receive what is sent to the multicast group',
  certificate: 'wants you to trust the TLS certificate presented by',
};
const SCOPES = {
  loopback: 'This device (loopback)',
  local: 'Your local network',
  internet: 'The internet',
  // A name is looked up only once the user allows it (no lookup before consent): if it then
  // turns out to be on this device or the local network, the user is asked again.
  unknown: 'Not looked up yet: only if you allow. You will be asked again if it is on this device or your local network.',
};
const SCOPE_WARNINGS = {
  local: 'Devices on your local network (printers, routers, cameras, NAS) often trust anything that can reach them. Allow only a site you trust with that device.',
  loopback: 'Programs on this computer can be reached this way, including ones that expect only local programs to talk to them.',
};

/** @param {string} name */
const $ = (name) => /** @type {HTMLElement} */ (document.getElementById(name));

let answered = false;

// The allowing buttons work only once the window has been visible and focused for a moment, and
// again after every loss of focus (as Firefox's own permission prompts do): a click meant for
// the page, landing as the window opens over it, must not allow anything. Deny always works.
const ARM_DELAY_MS = 750;
let armed = false;
/** @type {ReturnType<typeof setTimeout> | undefined} */
let armTimer;
const ALLOWING = ['allow-once', 'allow-always'];

function setArmed(on) {
  armed = on;
  for (const name of ALLOWING) /** @type {HTMLButtonElement} */ ($(name)).disabled = !on;
  document.body.dataset.armed = String(on);
}

function rearm() {
  setArmed(false);
  clearTimeout(armTimer);
  if (document.visibilityState === 'visible' && document.hasFocus()) armTimer = setTimeout(() => setArmed(true), ARM_DELAY_MS);
}

function answer(decision) {
  if (answered || (decision !== 'deny' && !armed)) return;
  const address = /** @type {HTMLInputElement} */ ($('address')).value.trim();
  if (decision !== 'deny' && (address.length === 0 || address.length > 253 || /\s/.test(address))) {
    $('address').focus();
    return;
  }
  answered = true;
  api.runtime.sendMessage({ op: 'prompt-answer', id, promptId, decision, host: address }).finally(() => window.close());
}

function show(prompt) {
  if (!prompt) {
    $('title').textContent = 'This request is no longer waiting for an answer.';
    for (const button of document.querySelectorAll('button')) /** @type {HTMLButtonElement} */ (button).disabled = true;
    return;
  }
  document.title = `Allow ${prompt.origin}?`;
  $('origin').textContent = prompt.origin;
  $('private').hidden = !prompt.incognito;
  $('action').textContent = ACTIONS[prompt.kind] ?? prompt.kind;
  /** @type {HTMLInputElement} */ ($('address')).value = prompt.host;
  $('port').textContent = prompt.kind === 'multicast' ? '—'
    : prompt.port === 0 ? 'any free port' : `${prompt.port}${prompt.service ? ` (${prompt.service})` : ''}`;
  $('addresses').textContent = prompt.addresses.length ? prompt.addresses.join(', ') : 'Looked up when you allow';
  $('scope').textContent = SCOPES[prompt.scope] ?? prompt.scope;
  $('scope').dataset.scope = prompt.scope;
  const warning = SCOPE_WARNINGS[prompt.scope];
  $('scope-warning').hidden = !warning;
  $('scope-warning').textContent = warning ?? '';
  $('scope-warning').classList.toggle('strong', prompt.scope === 'local');
  $('plaintext').hidden = !prompt.plaintext;
  const always = $('allow-always');
  if (prompt.kind === 'certificate' && prompt.certificate) {
    const cert = prompt.certificate;
    document.title = `Trust a certificate for ${prompt.origin}?`;
    $('title').textContent = 'A site asks you to trust a certificate';
    $('certificate').hidden = false;
    $('cert-reason').textContent = prompt.reason ?? '';
    $('cert-subject').textContent = cert.subject;
    $('cert-issuer').textContent = cert.issuer;
    $('cert-validity').textContent = `${cert.notBefore} to ${cert.notAfter}`;
    $('cert-fingerprint').textContent = cert.sha256Fingerprint;
    /** @type {HTMLInputElement} */ ($('address')).readOnly = true; // trusted for the server that presented it
    $('address-help').hidden = true;
    $('allow-once').textContent = 'Trust once';
    always.textContent = 'Always trust for this site';
  }
  if (prompt.offerAlways) {
    always.addEventListener('click', () => answer('always'));
  } else {
    // Private windows: nothing is written down (questionnaire 2.14).
    always.textContent = prompt.kind === 'certificate' ? 'Trust until private windows close' : 'Allow until private windows close';
    always.addEventListener('click', () => answer('session'));
  }
  $('allow-once').addEventListener('click', () => answer('once'));
  $('deny').addEventListener('click', () => answer('deny'));
  document.addEventListener('keydown', (event) => { if (event.key === 'Escape') answer('deny'); });
  $('deny').focus(); // the safe choice is the default one
  for (const type of ['focus', 'blur']) addEventListener(type, rearm);
  document.addEventListener('visibilitychange', rearm);
  rearm();
  let left = Math.round(prompt.timeoutSeconds);
  const tick = () => {
    $('countdown').textContent = `Denied automatically in ${left} s.`;
    if (left-- <= 0) window.close();
  };
  tick();
  setInterval(tick, 1000);
  document.body.dataset.ready = 'true';
}

api.runtime.sendMessage({ op: 'prompt-details', id, promptId }).then(show, () => show(null));
