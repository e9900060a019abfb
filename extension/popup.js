// @ts-check
// The toolbar popup: what the current tab holds, and a way to close any or all of it. Pages see
// only generic errors; the reasons (refused, reset, unreachable) are listed here for the user.
'use strict';

const api = globalThis.browser ?? globalThis.chrome;

function size(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

function age(ms) {
  const s = Math.floor(ms / 1000);
  return s < 60 ? `${s} s` : s < 3600 ? `${Math.floor(s / 60)} min` : `${Math.floor(s / 3600)} h`;
}

async function currentTab() {
  // Opened as a page (tests, or pinned), ?tab= names the tab; as the toolbar popup, the active one.
  const named = Number(new URLSearchParams(location.search).get('tab'));
  if (named) return named;
  const [tab] = await api.tabs.query({ active: true, currentWindow: true });
  return tab?.id ?? -1;
}

async function render() {
  const tabId = await currentTab();
  const { sockets, failures } = await api.runtime.sendMessage({ op: 'sockets', tabId });
  const body = /** @type {HTMLTableSectionElement} */ (document.querySelector('#sockets tbody'));
  body.replaceChildren();
  const now = Date.now();
  for (const socket of sockets) {
    const row = body.insertRow();
    row.dataset.id = String(socket.id);
    for (const [text, numeric] of [[socket.origin], [socket.kind], [socket.destination], [size(socket.sent), true], [size(socket.received), true], [age(now - socket.since), true], [socket.path]]) {
      const cell = row.insertCell();
      cell.textContent = String(text);
      if (numeric) cell.className = 'num';
    }
    const button = document.createElement('button');
    button.textContent = 'Close';
    button.className = 'close';
    button.addEventListener('click', () => api.runtime.sendMessage({ op: 'close-sockets', ids: [socket.id] }).then(render));
    row.insertCell().append(button);
  }
  /** @type {HTMLElement} */ (document.getElementById('none')).hidden = sockets.length > 0;
  const closeAll = /** @type {HTMLButtonElement} */ (document.getElementById('close-all'));
  closeAll.disabled = sockets.length === 0;
  closeAll.onclick = () => api.runtime.sendMessage({ op: 'close-sockets', ids: sockets.map((s) => s.id) }).then(render);
  const list = /** @type {HTMLElement} */ (document.getElementById('failures'));
  list.replaceChildren(...failures.map((f) => {
    const item = document.createElement('li');
    item.textContent = `${new Date(f.when).toLocaleTimeString()} ${f.origin} ${f.kind} ${f.destination}: ${f.detail}`;
    return item;
  }));
  document.body.dataset.ready = 'true';
}

render();
setInterval(render, 1000);
