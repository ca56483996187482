// Test harness for the sockmesh conformance suite.
//
// Every test runs inside `scenario(name, fn)`: it gets a context that starts real
// sockmesh processes (each on fresh loopback ports), real socketcluster-client
// sockets and raw `ws` sockets, records every WebSocket frame they exchange, and
// cleans all of it up afterwards. When a test fails, the frames of every socket it
// used and the tail of the server's output are appended to the assertion message,
// so a failure report shows exactly what went over the wire.

import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import http from 'node:http';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test, after } from 'node:test';

import WebSocket from 'ws';
import socketClusterClient from 'socketcluster-client';
import AGTransport from 'socketcluster-client/lib/transport.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export const AUTH_KEY = 'conformance-test-auth-key-0123456789';
/** Every server's --admin-token; httpText and httpStatus send it. */
export const ADMIN_TOKEN = 'conformance-test-admin-token';
const adminHeaders = { Authorization: `Bearer ${ADMIN_TOKEN}` };
export const PING_INTERVAL_MS = 200;
export const PING_TIMEOUT_MS = 1000;
export const HANDSHAKE_TIMEOUT_MS = 1000;

/** Fast, bounded reconnects (the client default is 10-20 s). */
export const FAST_RECONNECT = { initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000 };

export function sockmeshBin() {
  const bin = process.env.SOCKMESH_BIN
    ? path.resolve(process.env.SOCKMESH_BIN)
    : path.resolve(here, '../../../bin/sockmesh');
  if (!existsSync(bin)) {
    throw new Error(`sockmesh binary not found at ${bin} (build it with 'go build -o bin/sockmesh ./cmd/sockmesh' or set SOCKMESH_BIN)`);
  }
  return bin;
}

// ---------------------------------------------------------------------------
// Small utilities

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** Like sleep, but does not keep the process alive (for the losing side of a race). */
const idle = (ms) => new Promise((resolve) => setTimeout(resolve, ms).unref());

/**
 * Polls `predicate` until it returns a truthy value (which is returned) or `ms`
 * elapses (then throws, naming `what`).
 */
export async function waitFor(predicate, ms, what = 'condition') {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    }
    await sleep(10);
  }
}

/** Rejects if `promise` does not settle within `ms`. */
export async function within(promise, ms, what = 'operation') {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Captures the rejection of `promise` (fails if it resolves). */
export async function rejectionOf(promise, ms, what = 'operation') {
  try {
    const value = await within(promise, ms, what);
    throw Object.assign(new Error(`${what} resolved with ${JSON.stringify(value)} but was expected to reject`), { unexpectedResolve: true });
  } catch (err) {
    if (err.unexpectedResolve) throw err;
    return err;
  }
}

/** Free TCP ports on 127.0.0.1, all distinct (listeners held open until all are known). */
export async function freePorts(n) {
  const servers = [];
  try {
    for (let i = 0; i < n; i++) {
      const srv = net.createServer();
      await new Promise((resolve, reject) => {
        srv.once('error', reject);
        srv.listen(0, '127.0.0.1', resolve);
      });
      servers.push(srv);
    }
    return servers.map((s) => s.address().port);
  } finally {
    await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
  }
}

function b64url(buf) {
  return Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');
}

/** An HS256 JWT over `payload`, signed with `key`. */
export function signJwt(payload, key = AUTH_KEY) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(payload));
  const sig = b64url(createHmac('sha256', key).update(`${head}.${body}`).digest());
  return `${head}.${body}.${sig}`;
}

export function decodeJwtPayload(token) {
  const part = token.split('.')[1];
  return JSON.parse(Buffer.from(part.replace(/-/g, '+').replace(/_/g, '/'), 'base64').toString('utf8'));
}

const nowSec = () => Math.floor(Date.now() / 1000);
export { nowSec };

function clip(s, n = 400) {
  if (typeof s !== 'string') s = String(s);
  return s.length > n ? `${s.slice(0, n)}…(${s.length} chars)` : s;
}

// ---------------------------------------------------------------------------
// Frame capture for the real client.
//
// The client's transport is not reachable before it opens, so the transport
// prototype is wrapped once: every frame sent or received by a client created by
// this harness is appended to the array passed as the (unknown to the client)
// option `__frames`.

if (!AGTransport.prototype.__sockmeshWrapped) {
  const origSend = AGTransport.prototype.send;
  const origOnMessage = AGTransport.prototype._onMessage;
  AGTransport.prototype.send = function (data) {
    const log = this.options && this.options.__frames;
    if (log) log.push({ t: Date.now(), dir: 'C->S', data: String(data) });
    return origSend.call(this, data);
  };
  AGTransport.prototype._onMessage = function (message) {
    const log = this.options && this.options.__frames;
    if (log) {
      const data = typeof message === 'string' ? message : `<binary ${message.byteLength ?? message.length} bytes>`;
      log.push({ t: Date.now(), dir: 'S->C', data });
    }
    return origOnMessage.call(this, message);
  };
  AGTransport.prototype.__sockmeshWrapped = true;
}

/** Parses the JSON packets in a frame log entry (arrays are flattened). */
export function packetsOf(entry) {
  if (entry.data === '' || entry.data == null) return [];
  try {
    const v = JSON.parse(entry.data);
    return Array.isArray(v) ? v : [v];
  } catch {
    return [];
  }
}

// ---------------------------------------------------------------------------
// The sockmesh server process

/** GET `url` on a fresh connection; resolves the body (or null on error / non-200). */
export function httpText(url, ms = 2000) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: ms, headers: adminHeaders }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve(res.statusCode === 200 ? body : null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
  });
}

/** GET `url` on a fresh connection (no keep-alive left behind); resolves the status or 0. */
export function httpStatus(url, ms = 500) {
  return new Promise((resolve) => {
    const req = http.get(url, { agent: false, timeout: ms, headers: adminHeaders }, (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(0));
  });
}

export class Server {
  constructor({ name, ports, args, t0 }) {
    this.name = name;
    [this.wsPort, this.adminPort, this.meshPort, this.gossipPort] = ports;
    this.args = args;
    this.t0 = t0;
    this.output = [];
    this.exited = null; // {code, signal} once exited
    this.expectExit = false;
  }

  get ports() {
    return [this.wsPort, this.adminPort, this.meshPort, this.gossipPort];
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.wsPort}/socketcluster/`;
  }

  async start() {
    const argv = [
      'serve',
      '--name', this.name,
      '--ws-addr', `127.0.0.1:${this.wsPort}`,
      '--admin-addr', `127.0.0.1:${this.adminPort}`,
      '--mesh-addr', `127.0.0.1:${this.meshPort}`,
      '--gossip-addr', `127.0.0.1:${this.gossipPort}`,
      '--ping-interval', `${PING_INTERVAL_MS}ms`,
      '--ping-timeout', `${PING_TIMEOUT_MS / 1000}s`,
      '--handshake-timeout', `${HANDSHAKE_TIMEOUT_MS / 1000}s`,
      '--auth-key', AUTH_KEY,
      '--admin-token', ADMIN_TOKEN,
      '--demo',
      ...this.args,
    ];
    this.argv = argv;
    this.exited = null;
    this.expectExit = false;
    const proc = spawn(sockmeshBin(), argv, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const capture = (stream, tag) => {
      let buf = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        buf += chunk;
        let i;
        while ((i = buf.indexOf('\n')) >= 0) {
          this.output.push(`[${Date.now() - this.t0}ms ${tag}] ${buf.slice(0, i)}`);
          buf = buf.slice(i + 1);
          if (this.output.length > 300 && !this.keepAllOutput) this.output.splice(0, this.output.length - 300);
        }
      });
    };
    capture(proc.stdout, 'out');
    capture(proc.stderr, 'err');
    this.exitPromise = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this.exited = { code, signal };
        this.output.push(`[${Date.now() - this.t0}ms] process exited code=${code} signal=${signal}`);
        resolve(this.exited);
      });
    });
    proc.once('error', (err) => this.output.push(`spawn error: ${err.message}`));

    const deadline = Date.now() + 10000;
    for (;;) {
      if (this.exited) {
        throw new Error(`sockmesh exited before becoming healthy (${JSON.stringify(this.exited)})\n${this.logTail()}`);
      }
      if ((await httpStatus(`http://127.0.0.1:${this.adminPort}/healthz`)) === 200) return this;
      if (Date.now() > deadline) {
        throw new Error(`sockmesh did not answer 200 on /healthz within 10 s\n${this.logTail()}`);
      }
      await sleep(50);
    }
  }

  /**
   * The value of an unlabelled metric from /metrics, or null when the server does not
   * export it (metric names beyond the `sockmesh_` prefix are not part of any contract).
   */
  async metric(name) {
    const text = await httpText(`http://127.0.0.1:${this.adminPort}/metrics`);
    const m = new RegExp(`^${name}(?:\\{\\})? ([0-9.eE+-]+)$`, 'm').exec(text || '');
    return m ? Number(m[1]) : null;
  }

  /**
   * SIGTERM, then (after `graceMs`) SIGQUIT for a goroutine dump and SIGKILL.
   * Resolves with {code, signal, graceful}. The default grace covers sockmesh's
   * default --drain-duration (10 s), over which it may spread its client closes.
   */
  async stop(graceMs = 12000) {
    this.expectExit = true;
    if (!this.proc || this.exited) return { ...this.exited, graceful: true };
    this.proc.kill('SIGTERM');
    const res = await Promise.race([this.exitPromise, idle(graceMs).then(() => null)]);
    if (res) return { ...res, graceful: true };
    // Ask the Go runtime for a goroutine dump (SIGQUIT) so a hang can be diagnosed.
    this.output.push(`[${Date.now() - this.t0}ms] no exit ${graceMs} ms after SIGTERM; sending SIGQUIT for a goroutine dump`);
    this.keepAllOutput = true;
    this.proc.kill('SIGQUIT');
    const dumped = await Promise.race([this.exitPromise, idle(3000).then(() => null)]);
    this.dumpFile = path.join(os.tmpdir(), `sockmesh-${this.name}-${this.proc.pid}-sigterm-hang.log`);
    writeFileSync(this.dumpFile, `${this.argv.join(' ')}\n${this.output.join('\n')}\n`);
    if (dumped) return { ...dumped, graceful: false };
    this.output.push(`[${Date.now() - this.t0}ms] sending SIGKILL`);
    this.proc.kill('SIGKILL');
    const res2 = await Promise.race([this.exitPromise, idle(5000).then(() => null)]);
    if (!res2) throw new Error(`sockmesh pid ${this.proc.pid} did not exit even after SIGKILL`);
    return { ...res2, graceful: false };
  }

  /** Hard kill (crash simulation). */
  async kill() {
    this.expectExit = true;
    if (!this.proc || this.exited) return this.exited;
    this.proc.kill('SIGKILL');
    return within(this.exitPromise, 5000, 'sockmesh to die after SIGKILL');
  }

  logTail(n = 60) {
    return this.output.slice(-n).join('\n');
  }
}

// ---------------------------------------------------------------------------
// Raw WebSocket client (for protocol violations and exact frames)

export class RawClient {
  constructor(url, { autoPong = true, label = 'raw', t0 = Date.now(), wsOptions = {} } = {}) {
    this.label = label;
    this.t0 = t0;
    this.frames = [];
    this.closed = null; // {code, reason}
    this.error = null;
    this.unexpectedResponse = null; // {statusCode}
    this.autoPong = autoPong;
    this.cid = 0;
    this.ws = new WebSocket(url, [], wsOptions);
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', (err) => {
        this.error = err;
        reject(err);
      });
      this.ws.once('unexpected-response', (req, res) => {
        this.unexpectedResponse = { statusCode: res.statusCode };
        this.frames.push({ t: Date.now(), dir: '--', data: `HTTP ${res.statusCode}` });
        reject(new Error(`unexpected HTTP response ${res.statusCode}`));
        res.resume();
        req.destroy();
      });
    });
    this.opened.catch(() => {});
    this.ws.on('message', (data, isBinary) => {
      const text = isBinary ? `<binary ${data.length} bytes>` : data.toString('utf8');
      this.frames.push({ t: Date.now(), dir: 'S->C', data: text, binary: isBinary });
      if (!isBinary && text === '' && this.autoPong && this.ws.readyState === WebSocket.OPEN) {
        this.send('');
      }
    });
    this.ws.on('ping', () => this.frames.push({ t: Date.now(), dir: 'S->C', data: '<ws PING control frame>', control: true }));
    this.closedPromise = new Promise((resolve) => {
      this.ws.once('close', (code, reason) => {
        this.closed = { code, reason: reason.toString('utf8'), t: Date.now() };
        this.frames.push({ t: Date.now(), dir: '--', data: `CLOSE code=${code} reason=${JSON.stringify(this.closed.reason)}` });
        resolve(this.closed);
      });
    });
    this.ws.on('error', (err) => {
      this.error = err;
    });
  }

  send(text) {
    this.frames.push({ t: Date.now(), dir: 'C->S', data: typeof text === 'string' ? text : `<binary ${text.length} bytes>` });
    this.ws.send(text);
  }

  sendJSON(obj) {
    this.send(JSON.stringify(obj));
  }

  /** Sends an invoke and resolves with the response packet ({rid, data|error}). */
  async invoke(event, data, ms = 3000) {
    const cid = ++this.cid;
    const pkt = { event, cid };
    if (data !== undefined) pkt.data = data;
    this.sendJSON(pkt);
    return this.waitForPacket((p) => p.rid === cid, ms, `response to ${event} (cid ${cid})`);
  }

  async handshake(authToken = null, ms = 3000) {
    await within(this.opened, ms, 'raw WebSocket to open');
    const res = await this.invoke('#handshake', { authToken }, ms);
    if (!res.data || typeof res.data.id !== 'string') {
      throw new Error(`bad handshake response ${JSON.stringify(res)}`);
    }
    return res.data;
  }

  packets() {
    const out = [];
    for (const f of this.frames) {
      if (f.dir !== 'S->C') continue;
      for (const p of packetsOf(f)) out.push(p);
    }
    return out;
  }

  async waitForPacket(pred, ms, what) {
    return waitFor(() => this.packets().find(pred), ms, what);
  }

  async waitClose(ms, what = 'server to close the connection') {
    return within(this.closedPromise, ms, what);
  }

  get isOpen() {
    return this.ws.readyState === WebSocket.OPEN;
  }

  dispose() {
    try {
      this.ws.terminate();
    } catch {
      // ignore
    }
  }

  dump() {
    return this.frames.map((f) => `  [${String(f.t - this.t0).padStart(6)}ms] ${f.dir} ${f.data === '' ? "''" : clip(f.data)}`).join('\n');
  }
}

// ---------------------------------------------------------------------------
// socketcluster-client wrapper

const RECORDED_EVENTS = [
  'connecting', 'connect', 'connectAbort', 'disconnect', 'close', 'error',
  'authenticate', 'deauthenticate', 'authStateChange', 'removeAuthToken',
  'subscribe', 'subscribeFail', 'unsubscribe', 'subscribeRequest', 'kickOut', 'raw',
];

/**
 * Wraps an AGClientSocket: `.socket` is the real client; `.events` lists every
 * recorded event as {name, data, t}; `.frames` every WebSocket frame.
 */
export class Client {
  constructor(server, options = {}, { label = 'client', t0 = Date.now() } = {}) {
    this.label = label;
    this.t0 = t0;
    this.frames = [];
    this.events = [];
    this.channelData = new Map(); // channel name -> array of received data
    const opts = {
      hostname: '127.0.0.1',
      port: server.wsPort,
      ackTimeout: 3000,
      autoReconnectOptions: { ...FAST_RECONNECT },
      ...options,
      __frames: this.frames,
    };
    this.socket = socketClusterClient.create(opts);
    for (const name of RECORDED_EVENTS) {
      (async () => {
        for await (const data of this.socket.listener(name)) {
          this.events.push({ name, data, t: Date.now() });
          if (name === 'disconnect' || name === 'connectAbort') {
            this.frames.push({ t: Date.now(), dir: '--', data: `${name} code=${data.code} reason=${JSON.stringify(data.reason)}` });
          }
        }
      })();
    }
  }

  /** Events named `name` (optionally after index `from`). */
  eventsNamed(name) {
    return this.events.filter((e) => e.name === name);
  }

  async waitEvent(name, ms, pred = () => true, what) {
    return waitFor(() => this.events.find((e) => e.name === name && pred(e.data)), ms, what || `client '${this.label}' event '${name}'`);
  }

  async waitEventCount(name, count, ms) {
    await waitFor(() => this.eventsNamed(name).length >= count, ms, `${count} '${name}' events on '${this.label}'`);
    return this.eventsNamed(name);
  }

  async connected(ms = 5000) {
    await waitFor(() => this.socket.state === 'open', ms, `client '${this.label}' to connect`);
    return this.eventsNamed('connect').at(-1).data;
  }

  /** Subscribes and consumes the channel into `this.channelData`; resolves when subscribed. */
  async subscribe(channel, options, ms = 3000) {
    const list = this.collect(channel, options);
    await waitFor(() => this.socket.isSubscribed(channel), ms, `subscription to '${channel}' on '${this.label}'`);
    return list;
  }

  /** Subscribes (without waiting) and consumes the channel; returns the live array of data. */
  collect(channel, options) {
    if (!this.channelData.has(channel)) this.channelData.set(channel, []);
    const list = this.channelData.get(channel);
    const ch = this.socket.subscribe(channel, options);
    (async () => {
      for await (const data of ch) list.push(data);
    })();
    return list;
  }

  /** Inbound #publish packets (as seen on the wire) for `channel`. */
  wirePublications(channel) {
    const out = [];
    for (const f of this.frames) {
      if (f.dir !== 'S->C') continue;
      for (const p of packetsOf(f)) {
        if (p && p.event === '#publish' && p.data && p.data.channel === channel) out.push(p.data.data);
      }
    }
    return out;
  }

  /** Packets sent by the client (flattened). */
  sentPackets() {
    const out = [];
    for (const f of this.frames) if (f.dir === 'C->S') out.push(...packetsOf(f));
    return out;
  }

  receivedPackets() {
    const out = [];
    for (const f of this.frames) if (f.dir === 'S->C') out.push(...packetsOf(f));
    return out;
  }

  dispose() {
    const s = this.socket;
    try {
      s.disconnect();
    } catch {
      // ignore
    }
    try {
      if (s.transport && s.transport.socket) s.transport.socket.terminate();
    } catch {
      // ignore
    }
    s.killAllListeners();
    s.killAllChannels();
    s.killAllReceivers();
    s.killAllProcedures();
  }

  dump() {
    return this.frames.map((f) => `  [${String(f.t - this.t0).padStart(6)}ms] ${f.dir} ${f.data === '' ? "''" : clip(f.data)}`).join('\n');
  }
}

// ---------------------------------------------------------------------------
// Scenario context

let serverSeq = 0;

// Servers stopped by finished tests; every one must have exited before the file ends.
const pendingStops = [];
after(async () => {
  const results = await Promise.all(pendingStops);
  const problems = results.filter(Boolean);
  if (problems.length) throw new Error(problems.join('\n'));
});

export class Ctx {
  constructor(t) {
    this.t = t;
    this.t0 = Date.now();
    this.servers = [];
    this.clients = [];
    this.raws = [];
  }

  /** Starts a dedicated sockmesh with optional extra flags (and fixed ports for restarts). */
  async server(extraArgs = [], { ports } = {}) {
    const srv = new Server({
      name: `t${++serverSeq}`,
      ports: ports || (await freePorts(4)),
      args: extraArgs,
      t0: this.t0,
    });
    this.servers.push(srv);
    await srv.start();
    return srv;
  }

  /** Starts a new process on the same ports and flags as `srv` (after it has exited). */
  async restart(srv) {
    const again = new Server({ name: srv.name, ports: srv.ports, args: srv.args, t0: this.t0 });
    this.servers.push(again);
    const deadline = Date.now() + 10000;
    for (;;) {
      try {
        await again.start();
        return again;
      } catch (err) {
        // the port may linger for a moment after the previous process died
        if (Date.now() > deadline) throw err;
        await sleep(100);
      }
    }
  }

  client(server, options = {}, label) {
    const c = new Client(server, options, { label: label || `client${this.clients.length + 1}`, t0: this.t0 });
    this.clients.push(c);
    return c;
  }

  /** A connected client (waits for the handshake). */
  async connectedClient(server, options = {}, label) {
    const c = this.client(server, options, label);
    await c.connected();
    return c;
  }

  raw(server, { pathname = '/socketcluster/', query = '', ...opts } = {}) {
    const url = `ws://127.0.0.1:${server.wsPort}${pathname}${query}`;
    const r = new RawClient(url, { label: `raw${this.raws.length + 1}`, t0: this.t0, ...opts });
    this.raws.push(r);
    return r;
  }

  dump() {
    const parts = [];
    for (const c of this.clients) {
      parts.push(`--- frames of ${c.label} (socketcluster-client, state=${c.socket.state}) ---\n${c.dump()}`);
    }
    for (const r of this.raws) {
      parts.push(`--- frames of ${r.label} (raw ws) ---\n${r.dump()}`);
    }
    for (const s of this.servers) {
      parts.push(`--- sockmesh ${s.name} ws=${s.wsPort} (${s.exited ? `exited ${JSON.stringify(s.exited)}` : 'running'}) output tail ---\n${s.logTail(40)}`);
    }
    return parts.join('\n');
  }

  async cleanup() {
    for (const c of this.clients) c.dispose();
    for (const r of this.raws) r.dispose();
    const problems = [];
    for (const s of this.servers) {
      if (s.exited && !s.expectExit) {
        problems.push(`sockmesh ${s.name} died during the test: ${JSON.stringify(s.exited)}\n${s.logTail()}`);
      }
      if (s.output.some((l) => /panic:|DATA RACE/.test(l))) {
        problems.push(`sockmesh ${s.name} output shows a panic or data race:\n${s.logTail()}`);
      }
      // SIGTERM now; the exit (a graceful drain takes about a second) is awaited and
      // asserted in the file's after() hook, overlapping with the next test.
      const name = s.name;
      pendingStops.push(s.stop().then(
        (res) => {
          if (!s.exited) return `sockmesh ${name} (test "${this.t.name}") is still running after stop()`;
          if (!res.graceful) return `sockmesh ${name} (test "${this.t.name}") did not exit within 12 s of SIGTERM; needed SIGQUIT/SIGKILL. Full output with goroutine dump: ${s.dumpFile}`;
          return null;
        },
        (err) => `stopping sockmesh ${name} failed: ${err.message}`,
      ));
    }
    return problems;
  }
}

/**
 * Declares a test. `fn(ctx, t)` runs with a fresh context; everything it started is
 * cleaned up; on failure the frame logs are appended to the error message.
 */
export function scenario(name, fnOrOpts, maybeFn) {
  const opts = typeof fnOrOpts === 'function' ? {} : fnOrOpts;
  const fn = typeof fnOrOpts === 'function' ? fnOrOpts : maybeFn;
  test(name, { timeout: 30000, ...opts }, async (t) => {
    const ctx = new Ctx(t);
    let failure = null;
    try {
      await fn(ctx, t);
    } catch (err) {
      failure = err;
    }
    let problems = [];
    try {
      problems = await ctx.cleanup();
    } catch (err) {
      problems.push(`cleanup failed: ${err.message}`);
    }
    if (failure) {
      const wire = ctx.dump();
      try {
        failure.message = `${failure.message}\n\n===== wire log =====\n${wire}\n${problems.join('\n')}`;
      } catch {
        // message not writable
      }
      throw failure;
    }
    if (problems.length) {
      throw new Error(`${problems.join('\n')}\n\n===== wire log =====\n${ctx.dump()}`);
    }
  });
}

/**
 * Absence check: after `control()` has become true (proof that the server did
 * deliver the message somewhere), gives the server `graceMs` more to misbehave.
 */
export async function settle(graceMs = 300) {
  await sleep(graceMs);
}
