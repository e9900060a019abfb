// What a module worker sees of itself: compared with and without the extension.
import { answer, metaUrl } from './helper.mjs';

const report = { href: self.location.href, pathname: location.pathname, answer, helperMetaUrl: metaUrl, importScriptsThrows: null };
try {
  importScripts('helper.js');
  report.importScriptsThrows = false;
} catch (e) {
  report.importScriptsThrows = e.name;
}
self.onmessage = async (event) => {
  if (event.data !== 'report') return;
  report.fetched = (await (await fetch('data.txt')).text()).trim();
  report.api = typeof TCPSocket;
  self.postMessage(report);
};
