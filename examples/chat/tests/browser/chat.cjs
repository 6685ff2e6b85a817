// Drives the chat demo in headless Chromium with playwright-core: `node chat.cjs <scenario>`.
//
// Run by examples/chat/tests/browser.rs, which sets:
//   CHAT_BIN      the chat server binary (started here, on a free port, and restarted at will)
//   NODE_MODULES  the directory holding playwright-core (scripts/browser-setup.sh installs it)
//   OUT_DIR       where screenshots go
//   CHROMIUM      the browser (default /usr/bin/chromium); nothing here downloads one
//
// A scenario exits 0 when every check held, else prints what it saw and exits 1.
"use strict";

const path = require("path");
const readline = require("readline");
const { spawn } = require("child_process");
const { chromium } = require(path.join(process.env.NODE_MODULES, "playwright-core"));

const STEP_TIMEOUT = 15_000; // ms for one expected change on a page
const WATCHDOG = 120_000; // ms for a whole scenario
const CHROMIUM_FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
// What Chromium logs by itself while the server is down; anything else is a page error.
const OUTAGE_ERROR = /ERR_CONNECTION_REFUSED|ERR_INCOMPLETE_CHUNKED_ENCODING|ERR_EMPTY_RESPONSE|ERR_CONNECTION_RESET|WebSocket connection to .* failed/;

const scenarios = {
  // Two WebSocket pages chat both ways and see each other join and leave.
  websocket: (env) => exchange(env, "", ""),
  // The same on crossws's SSE protocol, and across the two transports.
  sse: (env) => exchange(env, "?transport=sse", "?transport=sse"),
  mixed: (env) => exchange(env, "", "?transport=sse"),
  // A page reconnects by itself after the server restarts.
  restart: (env) => restart(env, ""),
  // Over HTTPS (TLS_CERT and TLS_KEY set): the page comes over HTTP/2, and its WebSocket opens
  // on that connection (RFC 8441), as the server's log of each peer's HTTP version shows.
  https: (env) => https(env),
  "sse-restart": (env) => restart(env, "?transport=sse"),
};

/** The chat binary, on `port` (0: a free one); `url` once it listens. */
class ChatServer {
  static async start(port = 0) {
    const child = spawn(process.env.CHAT_BIN, [], {
      env: { ...process.env, HOST: "127.0.0.1", PORT: String(port) },
      stdio: ["ignore", "pipe", "inherit"],
    });
    const server = new ChatServer(child);
    const lines = readline.createInterface({ input: child.stdout });
    server.log = [];
    server.url = await new Promise((resolve, reject) => {
      lines.on("line", (line) => {
        server.log.push(line);
        const found = /chat demo on (https?:\/\/\S+)/.exec(line);
        if (found) resolve(found[1]);
      });
      child.on("exit", (code) => reject(new Error(`chat server exited with ${code} before listening`)));
    });
    server.port = Number(new URL(server.url).port);
    return server;
  }

  constructor(child) {
    this.child = child;
    this.exited = new Promise((resolve) => child.on("exit", resolve));
    running.add(this);
  }

  /** Kills the server the hard way, as a crash would. */
  async kill() {
    this.child.kill("SIGKILL");
    await this.exited;
    running.delete(this);
  }
}
const running = new Set();
process.on("exit", () => running.forEach((server) => server.child.kill("SIGKILL")));

/** One user: a chat page in a browser context of its own. */
class User {
  static async open(env, query) {
    // The HTTPS scenario's certificate is self-signed.
    const context = await env.browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    page.setDefaultTimeout(STEP_TIMEOUT);
    const user = new User(context, page);
    // The WebSocket handshakes as Chromium saw them, through the DevTools protocol.
    const devtools = await context.newCDPSession(page);
    devtools.on("Network.webSocketHandshakeResponseReceived", (event) => user.handshakes.push(event.response));
    await devtools.send("Network.enable");
    await page.goto(env.server.url + "/" + query);
    await user.waitForStatus("connected");
    // The server greets a newcomer with its own join line first: that names the user.
    user.name = await user.joinedName(0);
    return user;
  }

  constructor(context, page) {
    this.context = context;
    this.page = page;
    this.errors = []; // console errors and uncaught exceptions
    this.handshakes = []; // the 101 responses of its WebSockets
    page.on("console", (message) => {
      if (message.type() === "error") this.errors.push(message.text());
    });
    page.on("pageerror", (error) => this.errors.push(String(error)));
  }

  lines() {
    return this.page.$$eval("#messages li", (items) => items.map((li) => li.textContent));
  }

  async status() {
    return this.page.$eval("#status", (status) => status.textContent);
  }

  /** Waits until `#status` reads `text` (or, for "disconnected", begins with it). */
  async waitForStatus(text) {
    try {
      await this.page.waitForFunction(
        (text) => document.querySelector("#status").textContent.startsWith(text),
        text,
      );
    } catch (error) {
      throw new Error(`#status never read "${text}"; it reads "${await this.status()}"`);
    }
  }

  /** Waits until the list of messages is exactly `expected`. */
  async expectLines(expected) {
    try {
      await this.page.waitForFunction(
        (expected) =>
          JSON.stringify([...document.querySelectorAll("#messages li")].map((li) => li.textContent)) ===
          JSON.stringify(expected),
        expected,
      );
    } catch (error) {
      throw new Error(`expected ${JSON.stringify(expected)}, the page shows ${JSON.stringify(await this.lines())}`);
    }
  }

  /** The name in the join line at `index`, once there is one. */
  async joinedName(index) {
    await this.page.waitForFunction((index) => document.querySelectorAll("#messages li").length > index, index);
    const line = (await this.lines())[index];
    const found = /^([0-9a-f]{8}) joined$/.exec(line);
    if (!found) throw new Error(`line ${index} is ${JSON.stringify(line)}, not a join line`);
    return found[1];
  }

  /**
   * Checks that Chromium negotiated permessage-deflate on the page's last WebSocket as the demo
   * configures it (shared: no context takeover either way), over HTTP/1.1 or HTTP/2.
   */
  expectDeflate() {
    const response = this.handshakes[this.handshakes.length - 1];
    // `101` over HTTP/1.1; over HTTP/2 (RFC 8441) the stream opens with `200`.
    const opened = response && (response.status === 101 || (response.status === 200 && this.page.url().startsWith("https:")));
    if (!opened) {
      throw new Error(`no 101 (or 200 over HTTP/2) for the WebSocket of ${this.name}: ${JSON.stringify(this.handshakes)}`);
    }
    const name = Object.keys(response.headers).find((key) => key.toLowerCase() === "sec-websocket-extensions");
    const value = name ? response.headers[name] : "";
    const params = value.split(";").map((part) => part.trim());
    const wanted = ["permessage-deflate", "server_no_context_takeover", "client_no_context_takeover"];
    if (params[0] !== wanted[0] || !wanted.every((param) => params.includes(param))) {
      throw new Error(`Chromium did not negotiate permessage-deflate for ${this.name}: Sec-WebSocket-Extensions ${JSON.stringify(value)}`);
    }
  }

  /** Types `text` and sends it with the button, or with Enter when `enter` is set. */
  async say(text, { enter = false } = {}) {
    await this.page.fill("#message", text);
    if (enter) await this.page.press("#message", "Enter");
    else await this.page.click("#send");
  }

  async leave() {
    await this.context.close();
  }
}

async function screenshot(env, user) {
  const file = path.join(process.env.OUT_DIR, `chat-${env.scenario}.png`);
  await user.page.screenshot({ path: file });
  console.log(`screenshot: ${file}`);
}

function expectNoErrors(user, allowed) {
  const errors = user.errors.filter((error) => !(allowed && allowed.test(error)));
  if (errors.length) throw new Error(`the page of ${user.name} logged errors: ${JSON.stringify(errors)}`);
}

async function exchange(env, queryA, queryB) {
  const a = await User.open(env, queryA);
  const b = await User.open(env, queryB);
  await a.expectLines([`${a.name} joined`, `${b.name} joined`]);
  await b.expectLines([`${b.name} joined`]);

  await a.say("hello from a");
  const fromA = `${a.name}: hello from a`;
  await a.expectLines([`${a.name} joined`, `${b.name} joined`, fromA]);
  await b.expectLines([`${b.name} joined`, fromA]);

  await b.say("hello from b", { enter: true });
  const fromB = `${b.name}: hello from b`;
  await a.expectLines([`${a.name} joined`, `${b.name} joined`, fromA, fromB]);
  await b.expectLines([`${b.name} joined`, fromA, fromB]);
  if ((await a.page.inputValue("#message")) !== "") throw new Error("the input was not cleared after sending");

  // WebSocket pages negotiated permessage-deflate; a line above the server's threshold (128
  // bytes) goes up compressed by Chromium and comes back compressed, to both pages.
  for (const [user, query] of [[a, queryA], [b, queryB]]) {
    if (!query.includes("transport=sse")) user.expectDeflate();
  }
  const long = "a longer line, " + "compressed on the wire both ways, ".repeat(12).trim();
  await b.say(long);
  const fromBLong = `${b.name}: ${long}`;
  await a.expectLines([`${a.name} joined`, `${b.name} joined`, fromA, fromB, fromBLong]);
  await b.expectLines([`${b.name} joined`, fromA, fromB, fromBLong]);
  await screenshot(env, a);

  expectNoErrors(a);
  expectNoErrors(b);
  await b.leave();
  await a.expectLines([`${a.name} joined`, `${b.name} joined`, fromA, fromB, fromBLong, `${b.name} left`]);
  expectNoErrors(a);
}

async function restart(env, query) {
  const a = await User.open(env, query);
  await a.expectLines([`${a.name} joined`]);
  expectNoErrors(a);

  const port = env.server.port;
  await env.server.kill();
  await a.waitForStatus("disconnected");
  env.server = await ChatServer.start(port);
  await a.waitForStatus("connected");

  // A new connection is a new peer with a new name, and negotiates compression again.
  const name = await a.joinedName(1);
  if (!query.includes("transport=sse")) a.expectDeflate();
  await a.say("back again");
  await a.expectLines([`${a.name} joined`, `${name} joined`, `${name}: back again`]);
  await screenshot(env, a);
  expectNoErrors(a, OUTAGE_ERROR);
}

async function https(env) {
  if (!env.server.url.startsWith("https://")) throw new Error(`the server is not on HTTPS: ${env.server.url}`);
  await exchange(env, "", "");
  const a = await User.open(env, "");
  const protocol = await a.page.evaluate(() => performance.getEntriesByType("navigation")[0].nextHopProtocol);
  if (protocol !== "h2") throw new Error(`the page came over ${protocol}, not h2`);
  await a.say("over http/2");
  await a.expectLines([`${a.name} joined`, `${a.name}: over http/2`]);
  const joined = env.server.log.filter((line) => / joined over /.test(line));
  if (!joined.some((line) => line === `${a.name} joined over HTTP/2.0`)) {
    throw new Error(`the server saw ${a.name} over something else: ${JSON.stringify(joined)}`);
  }
  if (!joined.every((line) => line.endsWith("HTTP/2.0"))) {
    throw new Error(`a WebSocket went over HTTP/1.1: ${JSON.stringify(joined)}`);
  }
  await screenshot(env, a);
  expectNoErrors(a);
}

async function main() {
  const scenario = process.argv[2];
  if (!scenarios[scenario]) throw new Error(`unknown scenario ${JSON.stringify(scenario)}; one of ${Object.keys(scenarios)}`);
  setTimeout(() => {
    console.error(`scenario ${scenario} did not finish within ${WATCHDOG / 1000} s`);
    process.exit(1);
  }, WATCHDOG).unref();

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_FLAGS, // playwright adds a fresh --user-data-dir of its own, removed on close
  });
  const env = { scenario, browser, server: await ChatServer.start() };
  try {
    await scenarios[scenario](env);
  } finally {
    await browser.close();
    await env.server.kill();
  }
  console.log(`scenario ${scenario}: ok`);
}

main().catch((error) => {
  console.error(error.stack || String(error));
  process.exit(1);
});
