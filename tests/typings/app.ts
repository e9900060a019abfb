// A small app against types/direct-sockets.d.ts, compiled by tests/test_typings_compile.py with
// `tsc --strict`. The `@ts-expect-error` lines must stay errors: they check that the types are
// precise (a compile that passes them has lost information), not only permissive.

async function lineClient(host: string, port: number): Promise<string> {
  const socket = new TCPSocket(host, port, { noDelay: true });
  const { readable, writable } = await socket.opened;
  const writer = writable.getWriter();
  await writer.write(new TextEncoder().encode("hello\n"));
  await writer.write(new Uint8Array(new SharedArrayBuffer(4))); // shared memory is copied, so allowed
  const reader = readable.getReader({ mode: "byob" });
  const { value } = await reader.read(new Uint8Array(1024));
  // @ts-expect-error a plain socket has no TLS session to look at without a check
  console.log((await socket.opened).tls.version);
  return new TextDecoder().decode(value);
}

async function secureClient(): Promise<string> {
  const socket = new TCPSocket("printer.local", 631, { secureTransport: "on", alpn: ["ipp"] });
  const { tls } = await socket.opened;
  const upgraded = new TCPSocket("mail.example", 587, { secureTransport: "starttls" }).startTls();
  return `${tls.version} ${tls.cipher} ${tls.alpn ?? "-"} ${(await upgraded.opened).tls.cipher}`;
}

async function echoServer(): Promise<number> {
  const server = new TCPServerSocket("127.0.0.1", { localPort: 40000 });
  const { readable: connections, localPort } = await server.opened;
  void (async () => {
    for await (const connection of connections) {
      const { readable, writable } = await connection.opened;
      await readable.pipeTo(writable);
    }
  })();
  const tlsServer = new TCPServerSocket("::1", { secureTransport: "on" });
  const { tls } = await tlsServer.opened;
  console.log(tls.certificate.spkiSha256);
  return localPort;
}

async function udp(): Promise<void> {
  const connected = new UDPSocket({ remoteAddress: "127.0.0.1", remotePort: 7777 });
  const { remoteAddress, remotePort, writable } = await connected.opened;
  await writable.getWriter().write({ data: new Uint8Array([1, 2, 3]) });
  console.log(`${remoteAddress}:${remotePort.toFixed(0)}`);

  const bound = new UDPSocket({ localAddress: "0.0.0.0", localPort: 5353, multicastAllowAddressSharing: true });
  const { multicastController, readable, writable: out } = await bound.opened;
  await multicastController.joinGroup("224.0.0.251");
  // @ts-expect-error a bound socket's datagrams need a destination
  await out.getWriter().write({ data: new Uint8Array(1) });
  const { value, done } = await readable.getReader().read();
  if (!done) console.log(value.remoteAddress.length, value.remotePort.toFixed(0), value.data.byteLength);
  for (const group of multicastController.joinedGroups) console.log(typeof group === "string" ? group : group.sourceAddress);
  // @ts-expect-error only the extension makes a MulticastController
  new MulticastController();
}

export { echoServer, lineClient, secureClient, udp };
