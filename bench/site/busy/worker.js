// A classic worker's transport loop for bench/firefox_worker_busy.py: counts bytes with their
// arrival times, and hands the samples to its page when told to stop.
let total = 0;
const samples = [];
let stop = false;
let started = false;
function note(n) {
  total += n;
  samples.push([Date.now(), total]);
  if (!started && total > 0) { started = true; postMessage({ started: true }); }
}
const CHUNK = 64 * 1024;
onmessage = async (e) => {
  const d = e.data;
  if (d === 'stop') { stop = true; postMessage({ samples, total }); return; }
  const { mode, base, cross, wsUrl } = d;
  const url = (p) => (mode.endsWith('-cors') ? cross : base) + p;
  try {
    if (mode.startsWith('fetch-down')) {
      const r = await fetch(url('/stream'));
      const reader = r.body.getReader();
      while (!stop) {
        const { value, done } = await reader.read();
        if (done) break;
        note(value.byteLength);
      }
      reader.cancel();
    } else if (mode.startsWith('fetch-up')) {
      const par = mode.includes('par') ? 4 : 1;
      const body = mode.includes('blob') ? new Blob([new Uint8Array(256 * 1024)]) : new Uint8Array(256 * 1024);
      await Promise.all(Array.from({ length: par }, async () => {
        while (!stop) {
          const r = await fetch(url('/up'), { method: 'POST', body });
          await r.arrayBuffer();
          note(256 * 1024);
        }
      }));
    } else if (mode === 'xhr-down') {
      const x = new XMLHttpRequest();
      let prev = 0;
      x.onprogress = (ev) => { note(ev.loaded - prev); prev = ev.loaded; if (stop) x.abort(); };
      x.open('GET', url('/stream'));
      x.send();
    } else if (mode === 'ws') {
      const ws = new WebSocket(wsUrl);
      ws.binaryType = 'arraybuffer';
      ws.onopen = () => { for (let i = 0; i < 16; i++) ws.send(new Uint8Array(CHUNK)); };
      ws.onmessage = (ev) => { note(ev.data.byteLength); if (!stop) ws.send(new Uint8Array(CHUNK)); else ws.close(); };
    } else if (mode.startsWith('port-frame') && mode.endsWith('-up')) {
      const p = d.port;
      p.onmessage = () => { note(CHUNK); if (!stop) { const b = new ArrayBuffer(CHUNK); p.postMessage(b, [b]); } };
      for (let i = 0; i < 16; i++) { const b = new ArrayBuffer(CHUNK); p.postMessage(b, [b]); }
    } else if (mode.startsWith('port-frame')) {
      const p = d.port;
      p.onmessage = (ev) => { note(ev.data.byteLength); if (!stop) p.postMessage('more'); };
      for (let i = 0; i < 16; i++) p.postMessage('more');
    } else if (mode === 'eventsource') {
      const es = new EventSource(url('/sse'));
      es.onmessage = (ev) => { note(ev.data.length); if (stop) es.close(); };
    } else if (mode === 'webtransport') {
      postMessage({ started: true, info: typeof WebTransport });
    }
  } catch (err) {
    postMessage({ error: String(err) });
  }
};
