// What a classic worker sees of itself: compared with and without the extension.
importScripts('helper.js');
const report = {
  href: self.location.href,
  string: String(self.location),
  pathname: location.pathname,
  isWorkerLocation: self.location instanceof WorkerLocation,
  helperLoaded: self.helperLoaded,
  name: self.name,
};
self.onmessage = async (event) => {
  if (event.data !== 'report') return;
  report.fetched = (await (await fetch('data.txt')).text()).trim();
  const nested = new Worker('nested.js');
  report.nested = await new Promise((resolve) => { nested.onmessage = (e) => resolve(e.data); nested.onerror = () => resolve('error'); });
  report.api = typeof TCPSocket;
  self.postMessage(report);
};
