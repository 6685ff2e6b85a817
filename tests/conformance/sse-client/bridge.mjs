// Real SSE clients for the anyws conformance suite, many in one node process, driven by
// newline-delimited JSON (the Rust side is anyws_conformance::sse_client).
//
// Commands on stdin, one JSON object a line:
//   {"op":"open","client":N,"kind":"crossws","url":"http://127.0.0.1:PORT/path"}
//       crossws's own client (crossws/websocket/sse, WebSocketSSE): one streaming POST carries
//       every message, one chunk each;
//   {"op":"open","client":N,"kind":"eventsource","url":...}
//       the eventsource package's EventSource, and one fetch POST with x-crossws-id per message,
//       sent one after the other;
//   {"op":"send","client":N,"data":"text"}
//   {"op":"close","client":N}   the client's own close(): crossws's leaves its streaming POST open
//   {"op":"abort","client":N}   close(), and abort every request of the client (a page unload)
// Events on stdout, one JSON object a line: {"event":"ready"} once, then per client
//   {"client":N,"event":"open"}                    the stream's response arrived
//   {"client":N,"event":"id","id":"..."}           the crossws-id event
//   {"client":N,"event":"message","data":"..."}    an `event: message`
//   {"client":N,"event":"error","message":"..."}   a stream error, a failed POST, a failed send
//   {"client":N,"event":"ended"}                   the stream ended; the client is closed so it
//                                                  does not reconnect as a new peer
import { EventSource } from "eventsource";
import { createInterface } from "node:readline";

const clients = new Map();
/** The client whose request carries this x-crossws-id, for the fetch wrapper. */
const byPeerId = new Map();
/** The EventSource the next WebSocketSSE creates is captured here. */
let capture = null;

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

/** Records each EventSource, so the bridge sees crossws's stream as well as its own. */
class TrackedEventSource extends EventSource {
  constructor(url, init) {
    super(url, init);
    if (capture) capture(this);
  }
}
globalThis.EventSource = TrackedEventSource;

/** Tracks each POST: its client aborts it on `abort`, and a failed one is reported. */
const realFetch = globalThis.fetch;
globalThis.fetch = (url, init = {}) => {
  const headers = new Headers(init.headers);
  const client = byPeerId.get(headers.get("x-crossws-id"));
  if (!client) return realFetch(url, init);
  const controller = new AbortController();
  client.requests.add(controller);
  const request = realFetch(url, { ...init, signal: controller.signal });
  request.then(
    async (response) => {
      client.requests.delete(controller);
      if (!response.ok) {
        const body = await response.clone().text().catch(() => "");
        emit({ client: client.n, event: "error", message: `POST answered ${response.status}: ${body}` });
      }
    },
    (error) => {
      client.requests.delete(controller);
      if (!client.aborted) emit({ client: client.n, event: "error", message: `POST failed: ${error}` });
    },
  );
  return request;
};

const { WebSocketSSE } = await import("crossws/websocket/sse");

/** Listens to one EventSource for the events every client kind reports. */
function watch(client, source) {
  source.addEventListener("open", () => emit({ client: client.n, event: "open" }));
  source.addEventListener("crossws-id", (event) => {
    client.id = event.data;
    byPeerId.set(event.data, client);
    emit({ client: client.n, event: "id", id: event.data });
  });
  source.addEventListener("message", (event) => emit({ client: client.n, event: "message", data: event.data }));
  source.addEventListener("error", (event) => {
    if (client.ended) return;
    client.ended = true;
    emit({ client: client.n, event: "error", message: event.message || "stream error" });
    // No reconnection: the next connection would be another peer.
    source.close();
    emit({ client: client.n, event: "ended" });
  });
}

function open(n, kind, url) {
  const client = { n, kind, id: null, source: null, ws: null, requests: new Set(), posting: Promise.resolve(), ended: false, aborted: false };
  clients.set(n, client);
  if (kind === "crossws") {
    // Watched from its constructor on, before crossws's own listeners: the streaming POST that
    // crossws opens on `crossws-id` must already map to this client.
    capture = (source) => {
      client.source = source;
      watch(client, source);
    };
    client.ws = new WebSocketSSE(url);
    capture = null;
  } else if (kind === "eventsource") {
    client.source = new TrackedEventSource(url);
    watch(client, client.source);
  } else {
    emit({ client: n, event: "error", message: `unknown client kind ${kind}` });
    return;
  }
  client.url = url;
}

function send(client, data) {
  if (client.kind === "crossws") {
    client.ws.send(data).catch((error) => emit({ client: client.n, event: "error", message: `send failed: ${error.message}` }));
    return;
  }
  if (!client.id) {
    emit({ client: client.n, event: "error", message: "send before the crossws-id event" });
    return;
  }
  // One POST per message, each after the previous one was answered, so they arrive in order.
  client.posting = client.posting.then(() =>
    fetch(client.url, { method: "POST", headers: { "x-crossws-id": client.id }, body: data }).then(
      (response) => response.arrayBuffer().catch(() => {}),
      () => {},
    ),
  );
}

function close(client, abort) {
  client.aborted = abort;
  if (client.ws) client.ws.close();
  else client.source.close();
  if (abort) for (const controller of client.requests) controller.abort();
}

const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  let command;
  try {
    command = JSON.parse(line);
  } catch (error) {
    emit({ event: "error", message: `bad command ${JSON.stringify(line)}: ${error.message}` });
    return;
  }
  const client = clients.get(command.client);
  switch (command.op) {
    case "open":
      return open(command.client, command.kind, command.url);
    case "send":
      return client ? send(client, command.data) : emit({ client: command.client, event: "error", message: "no such client" });
    case "close":
    case "abort":
      return client && close(client, command.op === "abort");
    default:
      emit({ event: "error", message: `unknown op ${command.op}` });
  }
});
// The test is over when stdin closes.
lines.on("close", () => process.exit(0));
emit({ event: "ready" });
