// A worker that starts a worker (relative URL) and relays one command to it.
self.onmessage = (event) => {
  const inner = new Worker('ops.js');
  inner.onmessage = (e) => self.postMessage(e.data);
  inner.onerror = (e) => self.postMessage({ ok: false, error: { name: 'error', message: e.message } });
  inner.postMessage(event.data);
};
