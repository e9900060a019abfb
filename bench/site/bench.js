// The page half of the benchmark: runs with no driver attached and reports its figures to the
// bench server (POST /result?token=...). Each measurement is the same work done two ways: our
// TCPSocket, and a WebSocket through websockify, to the same TCP echo server.
'use strict';

// The same script runs in a dedicated worker for the worker rows (`inWorker`): there it takes its
// parameters from the page's message instead of its URL, and reports nothing itself.
const inPage = typeof document !== 'undefined';
const query = new URLSearchParams(inPage ? location.search : '');
const token = query.get('token');
let params = JSON.parse(query.get('params') || '{}');
const report = (value) => fetch(`/result?token=${token}`, { method: 'POST', body: JSON.stringify(value) });

/** Echo `total` bytes in `chunk`-sized writes; MB/s of payload (one way) from first write to last byte back. */
async function echoOurs(chunk, total) {
  const socket = new TCPSocket('127.0.0.1', params.echoPort, { noDelay: true });
  const { readable, writable } = await socket.opened;
  const payload = new Uint8Array(chunk);
  const reader = readable.getReader();
  const writer = writable.getWriter();
  const start = performance.now();
  const reading = (async () => {
    let got = 0;
    while (got < total) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`ended after ${got} bytes`);
      got += value.byteLength;
    }
  })();
  for (let sent = 0; sent < total; sent += chunk) {
    await writer.ready;
    writer.write(payload.slice()); // a fresh buffer each time, as an application would have
  }
  await reading;
  const seconds = (performance.now() - start) / 1000;
  await writer.close();
  reader.releaseLock();
  await socket.close().catch(() => {});
  return total / seconds / 1e6;
}

function openWebSocket() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(params.websockifyUrl, ['binary']);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error('websockify refused the WebSocket'));
  });
}

async function echoWebsockify(chunk, total) {
  const ws = await openWebSocket();
  const payload = new Uint8Array(chunk);
  let got = 0;
  let wake = null;
  ws.onmessage = (event) => {
    got += event.data.byteLength;
    if (wake) wake();
  };
  const start = performance.now();
  for (let sent = 0; sent < total; sent += chunk) {
    // The WebSocket's only backpressure: how much is still buffered in the browser.
    while (ws.bufferedAmount > 4 * 1024 * 1024) await new Promise((r) => setTimeout(r, 1));
    ws.send(payload.slice());
  }
  while (got < total) await new Promise((r) => { wake = r; });
  const seconds = (performance.now() - start) / 1000;
  ws.close();
  return total / seconds / 1e6;
}

/** p50, p99 and the mean of round-trip times in ms (the mean is not bound to the timer's tick). */
function summary(times) {
  times.sort((a, b) => a - b);
  return { p50: percentile(times, 50), p99: percentile(times, 99), mean: times.reduce((a, b) => a + b, 0) / times.length };
}

function percentile(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function roundTripOurs(count) {
  const socket = new TCPSocket('127.0.0.1', params.echoPort, { noDelay: true });
  const { readable, writable } = await socket.opened;
  const reader = readable.getReader();
  const writer = writable.getWriter();
  const times = [];
  const message = new Uint8Array(32);
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    writer.write(message.slice());
    let got = 0;
    while (got < 32) got += (await reader.read()).value.byteLength;
    times.push(performance.now() - start);
  }
  await writer.close();
  reader.releaseLock();
  await socket.close().catch(() => {});
  return summary(times);
}

async function roundTripWebsockify(count) {
  const ws = await openWebSocket();
  const times = [];
  const message = new Uint8Array(32);
  let got = 0;
  let wake = null;
  ws.onmessage = (event) => {
    got += event.data.byteLength;
    if (wake) wake();
  };
  for (let i = 0; i < count; i++) {
    const start = performance.now();
    got = 0;
    ws.send(message.slice());
    while (got < 32) await new Promise((r) => { wake = r; });
    times.push(performance.now() - start);
  }
  ws.close();
  return summary(times);
}

/**
 * One way of echoing alone, for the bench to count each process's CPU time around it: a small
 * echo first (the host starts, code warms), then 'ready', then the measured echo once the bench
 * took its first count.
 */
async function echoAlone() {
  const echo = params.way === 'ours' ? echoOurs : echoWebsockify;
  await echo(params.chunk, 4 * 1024 * 1024);
  await report({ ok: true, value: 'ready' });
  await fetch(`/wait?token=${token}`);
  return echo(params.chunk, params.total);
}

/** A peer pushes at a page that never reads: the host must hold no more than the page's credit. */
async function holdWithoutReading() {
  const socket = new TCPSocket('127.0.0.1', params.pushPort);
  await Promise.race([socket.opened, new Promise((_, reject) => setTimeout(() => reject(new Error('not opened in 20 s')), 20000))]);
  await report({ ok: true, value: 'holding' });
  await fetch(`/wait?token=${token}`);
  await socket.close().catch(() => {});
  return 'released';
}

/** Runs one of this script's measurements in a dedicated worker of its own, and returns its result. */
function inWorker(name, ...args) {
  return new Promise((resolve, reject) => {
    const worker = new Worker('bench.js');
    worker.onmessage = (event) => {
      worker.terminate();
      if (event.data.ok) resolve(event.data.value);
      else reject(new Error(`in a worker: ${event.data.error}`));
    };
    worker.onerror = (event) => {
      worker.terminate();
      reject(new Error(`in a worker: ${event.message}`));
    };
    worker.postMessage({ name, args, params });
  });
}

if (!inPage) {
  const measurements = { echoOurs, roundTripOurs };
  self.onmessage = async (event) => {
    params = event.data.params;
    try {
      self.postMessage({ ok: true, value: await measurements[event.data.name](...event.data.args) });
    } catch (error) {
      self.postMessage({ ok: false, error: `${error?.name}: ${error?.message}` });
    }
  };
}

if (inPage) (async () => {
  // Started with its URL on the command line, the browser may show the page before the
  // extension is ready to inject the API: try again a little later.
  if (typeof TCPSocket === 'undefined') {
    const tries = Number(sessionStorage.getItem('tries') || 0);
    if (tries < 20) {
      sessionStorage.setItem('tries', String(tries + 1));
      setTimeout(() => location.reload(), 500);
      return;
    }
  }
  try {
    await report({ ok: true, value: 'started' }); // the bench gives a page that never starts another go
    if (params.mode === 'hold') {
      await report({ ok: true, value: await holdWithoutReading() });
      return;
    }
    if (params.mode === 'cpu') {
      await report({ ok: true, value: await echoAlone() });
      return;
    }
    const results = { echo: {}, roundTrip: {}, isolated: self.crossOriginIsolated === true };
    for (const chunk of params.chunks) {
      // Interleaved, so that a slow moment of a shared machine falls on both alike.
      results.echo[chunk] = { ours: [], websockify: [], worker: [] };
      for (let run = 0; run < params.runs; run++) {
        results.echo[chunk].ours.push(await echoOurs(chunk, params.total));
        if (!params.oursOnly) results.echo[chunk].websockify.push(await echoWebsockify(chunk, params.total));
        if (params.worker) results.echo[chunk].worker.push(await inWorker('echoOurs', chunk, params.total));
      }
    }
    results.roundTrip.ours = await roundTripOurs(params.roundTrips);
    if (!params.oursOnly) results.roundTrip.websockify = await roundTripWebsockify(params.roundTrips);
    if (params.worker) results.roundTrip.worker = await inWorker('roundTripOurs', params.roundTrips);
    await report({ ok: true, value: results });
  } catch (error) {
    await report({ ok: false, error: `${error?.name}: ${error?.message}` });
  }
})();
