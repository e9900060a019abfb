// The demo page: plain Direct Sockets code, as it would run in Chrome's built-in API.
'use strict';

const ECHO_PORT = Number(new URLSearchParams(location.search).get('echo') || document.documentElement.dataset.echo || 7777);
const enc = new TextEncoder();
const dec = new TextDecoder();
const $ = (id) => document.getElementById(id);

function log(id, text) {
  const element = $(id);
  element.textContent += `${text}\n`;
  element.scrollTop = element.scrollHeight;
}

function describe(error) {
  return `${error.name}: ${error.message}`;
}

// -- is the API here? ------------------------------------------------------------------------

if (typeof TCPSocket === 'undefined') {
  $('status').textContent = 'The Direct Sockets API is not here: load the extension (see README.md), and open this page over http://127.0.0.1.';
  $('status').classList.add('bad');
} else {
  $('status').textContent = 'The API is here. Each first use asks you in a consent window, unless you started the demo with --grant.';
}

// -- TCP client --------------------------------------------------------------------------------

$('tcp-port').value = String(ECHO_PORT);
let tcp = null;
let tcpWriter = null;

$('tcp-connect').addEventListener('submit', async (event) => {
  event.preventDefault();
  const host = $('tcp-host').value.trim();
  const port = Number($('tcp-port').value);
  log('tcp-log', `connecting to ${host}:${port} ...`);
  $('tcp-open').disabled = true;
  try {
    tcp = new TCPSocket(host, port, { noDelay: true });
    const { readable, writable, remoteAddress, remotePort } = await tcp.opened;
    log('tcp-log', `connected to ${remoteAddress}:${remotePort}`);
    tcpWriter = writable.getWriter();
    for (const id of ['tcp-line', 'tcp-send-button', 'tcp-close']) $(id).disabled = false;
    $('tcp-line').focus();
    const reader = readable.getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      log('tcp-log', `< ${dec.decode(value).replace(/\n$/, '')}`);
    }
    log('tcp-log', 'the server closed the connection');
  } catch (error) {
    log('tcp-log', describe(error));
  } finally {
    for (const id of ['tcp-line', 'tcp-send-button', 'tcp-close']) $(id).disabled = true;
    $('tcp-open').disabled = false;
  }
});

$('tcp-send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const line = $('tcp-line').value;
  $('tcp-line').value = '';
  log('tcp-log', `> ${line}`);
  await tcpWriter.write(enc.encode(`${line}\n`));
});

$('tcp-close').addEventListener('click', async () => {
  await tcpWriter.close(); // FIN: the echo service answers with its own
});

// -- UDP ------------------------------------------------------------------------------------------

$('udp-send').addEventListener('submit', async (event) => {
  event.preventDefault();
  const text = $('udp-text').value;
  try {
    const socket = new UDPSocket({ remoteAddress: '127.0.0.1', remotePort: ECHO_PORT });
    const { readable, writable } = await socket.opened;
    const writer = writable.getWriter();
    await writer.write({ data: enc.encode(text) });
    log('udp-log', `sent ${enc.encode(text).byteLength} bytes: ${text}`);
    const reader = readable.getReader();
    const { value } = await reader.read();
    log('udp-log', `received ${value.data.byteLength} bytes back: ${dec.decode(value.data)}`);
    reader.releaseLock();
    writer.releaseLock();
    await socket.close();
  } catch (error) {
    log('udp-log', describe(error));
  }
});

// -- a TCP server -------------------------------------------------------------------------------

let serverPort = 0;

async function serve(connection) {
  const { readable, writable, remoteAddress, remotePort } = await connection.opened;
  log('server-log', `accepted ${remoteAddress}:${remotePort}`);
  const writer = writable.getWriter();
  const reader = readable.getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    await writer.write(enc.encode(dec.decode(value).toUpperCase()));
  }
  await writer.close();
  log('server-log', `${remoteAddress}:${remotePort} left`);
}

$('server-start').addEventListener('click', async () => {
  $('server-start').disabled = true;
  try {
    const server = new TCPServerSocket('127.0.0.1');
    const { readable, localAddress, localPort } = await server.opened;
    serverPort = localPort;
    log('server-log', `listening on ${localAddress}:${localPort}`);
    $('server-try').disabled = false;
    const connections = readable.getReader();
    for (;;) {
      const { value, done } = await connections.read();
      if (done) break;
      serve(value).catch((error) => log('server-log', describe(error)));
    }
  } catch (error) {
    log('server-log', describe(error));
    $('server-start').disabled = false;
  }
});

$('server-try').addEventListener('click', async () => {
  try {
    const client = new TCPSocket('127.0.0.1', serverPort);
    const { readable, writable } = await client.opened;
    const writer = writable.getWriter();
    await writer.write(enc.encode('hello, server\n'));
    const { value } = await readable.getReader().read();
    log('server-log', `the client got: ${dec.decode(value).trim()}`);
    await writer.close();
  } catch (error) {
    log('server-log', describe(error));
  }
});
