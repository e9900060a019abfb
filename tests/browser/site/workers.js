// Scenarios that run the API in dedicated workers (tests/browser/test_workers.py).
'use strict';

/** Starts a worker of `kind` running tests/browser/site/workers/lib.js. */
function opsWorker(kind) {
  switch (kind) {
    case 'classic': return new Worker('workers/ops.js');
    case 'module': return new Worker('workers/ops.mjs', { type: 'module' });
    case 'blob': {
      const lib = new URL('workers/lib.js', document.baseURI).href;
      return new Worker(URL.createObjectURL(new Blob([`importScripts(${JSON.stringify(lib)});`], { type: 'text/javascript' })));
    }
    case 'nested': return new Worker('workers/nested-echo.js');
    default: throw new Error(`no worker kind ${kind}`);
  }
}

/** Sends one command to a worker; resolves with its value, rejects with its error. */
function ask(worker, cmd, params = {}) {
  return new Promise((resolve, reject) => {
    const onMessage = (event) => {
      if (event.data?.cmd !== cmd) return;
      worker.removeEventListener('message', onMessage);
      if (event.data.ok) resolve(event.data.value);
      else reject(Object.assign(new Error(event.data.error?.message), { name: event.data.error?.name }));
    };
    worker.addEventListener('message', onMessage);
    worker.onerror = (event) => reject(new Error(`worker error: ${event.message}`));
    worker.postMessage({ cmd, ...params });
  });
}

function nextMessage(worker, test = () => true) {
  return new Promise((resolve) => {
    const onMessage = (event) => {
      if (!test(event.data)) return;
      worker.removeEventListener('message', onMessage);
      resolve(event.data);
    };
    worker.addEventListener('message', onMessage);
  });
}

function epochNow() {
  return performance.timeOrigin + performance.now();
}

Object.assign(window.scenarios, {
  async workerEcho({ kind, port, text }) {
    // The page holds a socket of its own meanwhile: the worker's ids are not the page's.
    const own = new TCPSocket('127.0.0.1', port);
    const ownInfo = await own.opened;
    const worker = opsWorker(kind);
    try {
      const presence = kind === 'nested' ? null : await ask(worker, 'presence');
      const echo = await ask(worker, 'echo', { port, text });
      const writer = ownInfo.writable.getWriter();
      const reader = ownInfo.readable.getReader();
      const pageGot = await writeThenReadBack(writer, reader, 'and the page');
      writer.releaseLock();
      reader.releaseLock();
      await own.close();
      return { presence, ...echo, pageGot };
    } finally {
      worker.terminate();
    }
  },

  async workerAcrossHostRestart({ port }) {
    // A worker echoes, the page says which frames it holds, then waits while the test ends the
    // host; then the worker echoes again on a new socket, and the page says its frames again.
    const token = new URLSearchParams(location.search).get('token');
    const frames = () => [...document.querySelectorAll('iframe')].map((frame) => frame.getAttribute('src'));
    const worker = opsWorker('classic');
    const first = await ask(worker, 'echo', { port, text: 'before' });
    await window.report({ ok: true, value: { first: first.got, frames: frames() } });
    await fetch(`/wait?token=${token}`);
    const second = await ask(worker, 'echo', { port, text: 'after' });
    worker.terminate();
    return { second: second.got, frames: frames() };
  },

  async echoRate({ port, size, where }) {
    // A rough comparison (docs/BULK.md): `size` bytes echoed from the page or from a worker.
    if (where === 'page') {
      const started = performance.now();
      const r = await window.scenarios.bothWays({ port, size });
      return { MBps: size / 1e3 / (performance.now() - started), ok: r.uploadSha === r.receivedSha };
    }
    const worker = opsWorker('classic');
    try {
      await ask(worker, 'presence');
      const r = await ask(worker, 'bothWays', { port, size });
      return { MBps: size / 1e3 / r.elapsedMs, ok: r.uploadSha === r.receivedSha };
    } finally {
      worker.terminate();
    }
  },

  async workerShape() {
    // The same interfaces in a worker as on its page (what the typings declare).
    const worker = opsWorker('module');
    try {
      const inWorker = await ask(worker, 'shape');
      return { inWorker, onPage: self.apiShape() }; // workers/lib.js, which the page loads too
    } finally {
      worker.terminate();
    }
  },

  async workerUnderCsp({ metaCsp }) {
    // The page's CSP (its header, or a <meta> added here) may refuse blob: workers.
    if (metaCsp) {
      const meta = document.createElement('meta');
      meta.httpEquiv = 'Content-Security-Policy';
      meta.content = metaCsp;
      document.head.append(meta);
    }
    const worker = opsWorker('classic');
    try {
      return await Promise.race([ask(worker, 'presence'), new Promise((resolve) => setTimeout(() => resolve('no answer'), 5000))]);
    } finally {
      worker.terminate();
    }
  },

  async workerBothWays({ port, size }) {
    const worker = opsWorker('classic');
    try {
      return await ask(worker, 'bothWays', { port, size });
    } finally {
      worker.terminate();
    }
  },

  async workerUdp({ count }) {
    // The page holds a socket of its own meanwhile (datagrams take the page's channel: the
    // worker's ids must not reach the page's sockets).
    const own = new UDPSocket({ localAddress: '127.0.0.1' });
    await own.opened;
    const worker = opsWorker('module');
    try {
      return await ask(worker, 'udp', { count });
    } finally {
      worker.terminate();
      await own.close();
    }
  },

  async workerServer() {
    const worker = opsWorker('classic');
    try {
      return await ask(worker, 'server');
    } finally {
      worker.terminate();
    }
  },

  async workerHold({ port, how }) {
    // A worker opens a socket; on the test's signal the worker ends as `how` says.
    const token = new URLSearchParams(location.search).get('token');
    const worker = opsWorker('classic');
    const { serverPort } = await ask(worker, 'hold', { port });
    await window.report({ ok: true, value: { serverPort } });
    await fetch(`/wait?token=${token}`);
    if (how === 'terminate') worker.terminate();
    else if (how === 'close') await ask(worker, 'closeSelf');
    return 'ended';
  },

  async workerBusyPage({ port, seconds, chunk }) {
    // The page's main thread spins for `seconds` while its worker echoes: what arrives meanwhile?
    const worker = opsWorker('classic');
    const pumping = nextMessage(worker, (data) => data?.progress === 'pumping');
    const result = ask(worker, 'pump', { port, chunk });
    await pumping;
    await new Promise((resolve) => setTimeout(resolve, 1000));
    const busyStart = epochNow();
    while (epochNow() - busyStart < seconds * 1000) { /* busy: no task of this page runs */ }
    const busyEnd = epochNow();
    await new Promise((resolve) => setTimeout(resolve, 300));
    worker.postMessage({ cmd: 'stopPump' });
    const { samples } = await result;
    worker.terminate();
    const at = (t) => {
      let bytes = 0;
      for (const [when, received] of samples) if (when <= t) bytes = received;
      return bytes;
    };
    const before = at(busyStart) - at(busyStart - 1000);
    const during = at(busyEnd) - at(busyStart);
    // The longest stretch inside the busy time with nothing received.
    let longestGap = 0;
    let last = busyStart;
    for (const [when] of samples) {
      if (when < busyStart || when > busyEnd) continue;
      longestGap = Math.max(longestGap, when - last);
      last = when;
    }
    longestGap = Math.max(longestGap, busyEnd - last);
    return { beforeMBps: before / 1e6, duringMBps: during / 1e6 / seconds, busyMs: busyEnd - busyStart, longestGapMs: longestGap };
  },

  async workerSemantics() {
    // Everything a worker sees of itself that our blob must not change (compared across origins).
    const base = document.baseURI;
    const classic = new Worker('workers/semantics.js', { name: 'sem' });
    classic.postMessage('report');
    const c = await nextMessage(classic);
    classic.terminate();
    const module = new Worker('workers/semantics.mjs', { type: 'module' });
    module.postMessage('report');
    const m = await nextMessage(module);
    module.terminate();
    const thrown = await new Promise((resolve) => {
      const w = new Worker('workers/throws.js');
      w.onerror = (e) => {
        resolve({ type: e.type, isErrorEvent: e instanceof ErrorEvent, message: e.message, filename: e.filename, lineno: e.lineno });
        e.preventDefault();
        w.terminate();
      };
    });
    const missing = (type) => new Promise((resolve) => {
      const w = new Worker('workers/missing.js', { type });
      let messages = 0;
      w.onmessage = () => { messages += 1; };
      w.onerror = (e) => setTimeout(() => resolve({ type: e.type, isErrorEvent: e instanceof ErrorEvent, messages }), 200);
    });
    const afterTerminate = await new Promise((resolve) => {
      const w = new Worker('workers/ops.js');
      let got = 0;
      w.onmessage = () => { got += 1; };
      w.postMessage({ cmd: 'presence' });
      w.terminate();
      w.postMessage({ cmd: 'presence' });
      setTimeout(() => resolve(got), 300);
    });
    return {
      classic: {
        hrefIsScript: c.href === new URL('workers/semantics.js', base).href, stringIsScript: c.string === c.href,
        pathname: c.pathname, isWorkerLocation: c.isWorkerLocation, helperLoaded: c.helperLoaded, name: c.name,
        fetched: c.fetched, nested: { pathname: c.nested.pathname },
      },
      module: {
        hrefIsScript: m.href === new URL('workers/semantics.mjs', base).href, pathname: m.pathname, answer: m.answer,
        helperMetaUrl: m.helperMetaUrl === new URL('workers/helper.mjs', base).href, importScriptsThrows: m.importScriptsThrows, fetched: m.fetched,
      },
      thrown: { ...thrown, filename: thrown.filename === new URL('workers/throws.js', base).href, message: /boom at start/.test(thrown.message) },
      missingClassic: await missing('classic'),
      missingModule: await missing('module'),
      afterTerminate,
      instance: { isWorker: classic instanceof Worker, constructor: classic.constructor === Worker, name: Worker.name, length: Worker.length },
      api: { classic: c.api, module: m.api, nested: c.nested.api },
    };
  },
});
