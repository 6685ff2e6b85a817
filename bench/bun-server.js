// The Bun control for bench/run.sh: Bun's native WebSocket server (uWebSockets) serving the two
// apps of `anyws-fixture`, with the same behaviour:
//
//   PORT=P bun bench/bun-server.js --app echo|chatroom [--deflate] [--tls-cert PEM --tls-key PEM]
//
// - echo: every text or binary message goes back to its sender unchanged;
// - chatroom: open subscribes the peer to `room` and sends `ready`; every message goes back to
//   its sender and is published to `room` (Bun's publish skips the sender, so every peer gets
//   each message exactly once).
//
// It listens on 127.0.0.1:PORT and prints a `listening on 127.0.0.1:PORT` line, as the fixture
// does. Messages up to 16 MiB are accepted, the fixture's default limit; idle connections are
// never timed out during a run (the fixture's idle timeout is 120 s); compression is off, as in
// anyws, unless `--deflate`: then `perMessageDeflate: true` (Bun answers an offer with both
// `*_no_context_takeover`: its shared compressor and decompressor) and every send and publish
// asks for compression, as `anyws-fixture --deflate shared` compresses every message of the
// threshold's size or more. With `--tls-cert` and `--tls-key` it serves TLS (`wss://`) with
// that certificate and key: `Bun.serve({tls: {cert, key}})`.
const appIndex = process.argv.indexOf("--app");
const deflate = process.argv.includes("--deflate");
const app = appIndex > 0 ? process.argv[appIndex + 1] : "echo";
const flag = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const tlsCert = flag("--tls-cert");
const tlsKey = flag("--tls-key");
if (Boolean(tlsCert) !== Boolean(tlsKey)) {
  console.error("bun-server.js: --tls-cert and --tls-key go together");
  process.exit(2);
}
if (app !== "echo" && app !== "chatroom") {
  console.error(`bun-server.js: --app takes echo or chatroom, not ${app}`);
  process.exit(2);
}
const port = Number(process.env.PORT);
if (!Number.isInteger(port) || port <= 0) {
  console.error("bun-server.js: set PORT to the port to listen on");
  process.exit(2);
}

const websocket =
  app === "echo"
    ? {
        message(ws, message) {
          ws.send(message, deflate);
        },
      }
    : {
        open(ws) {
          ws.subscribe("room");
          ws.send("ready");
        },
        message(ws, message) {
          ws.send(message, deflate);
          ws.publish("room", message, deflate);
        },
      };

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  ...(tlsCert ? { tls: { cert: Bun.file(tlsCert), key: Bun.file(tlsKey) } } : {}),
  fetch(request, server) {
    if (server.upgrade(request)) {
      return undefined;
    }
    return new Response("anyws bench: Bun control\n");
  },
  websocket: {
    ...websocket,
    maxPayloadLength: 16 * 1024 * 1024,
    idleTimeout: 0,
    perMessageDeflate: deflate,
    publishToSelf: false,
  },
});

console.error(`bun-server.js: ${app} app, compression ${deflate ? "on" : "off"}, TLS ${tlsCert ? "on" : "off"}, Bun ${Bun.version}, listening on 127.0.0.1:${server.port}`);
process.on("SIGTERM", () => {
  server.stop(true);
  process.exit(0);
});
