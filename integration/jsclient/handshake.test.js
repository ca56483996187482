// Connection, handshake, ping/pong and protocol-guard conformance (reference §3, §4, §17 cases 1-3, 20).
import assert from 'node:assert/strict';

import {
  scenario, waitFor, within, sleep, PING_TIMEOUT_MS, PING_INTERVAL_MS,
} from './lib/harness.js';

scenario('§17.1 handshake: connect event, socket id, pingTimeout from the server, unauthenticated', async (ctx) => {
  const srv = await ctx.server();
  const c = ctx.client(srv);
  const status = await c.connected();

  assert.equal(typeof c.socket.id, 'string');
  assert.ok(c.socket.id.length > 0, 'socket id is non-empty');
  assert.equal(status.id, c.socket.id);
  assert.equal(status.pingTimeout, PING_TIMEOUT_MS, 'handshake status pingTimeout is the --ping-timeout in ms');
  assert.equal(c.socket.pingTimeout, PING_TIMEOUT_MS);
  assert.equal(status.isAuthenticated, false);
  assert.equal(status.authError, undefined, 'no authError when no token was presented');
  assert.equal(c.socket.authState, 'unauthenticated');
  assert.equal(c.socket.authToken, null);

  // The wire form of the handshake answer (§3): {"rid":<cid>,"data":{id,pingTimeout,isAuthenticated}}
  const hs = c.sentPackets().find((p) => p.event === '#handshake');
  assert.deepEqual(hs.data, { authToken: null });
  const res = c.receivedPackets().find((p) => p.rid === hs.cid);
  assert.ok(res, 'handshake answered with the same rid');
  assert.equal(res.error, undefined);

  // Every socket gets its own id.
  const c2 = await ctx.connectedClient(srv);
  assert.notEqual(c2.socket.id, c.socket.id, 'a second connection gets a different id');
});

scenario('§17.2 URL: query string and timestampRequests are tolerated', async (ctx) => {
  const srv = await ctx.server();
  const c = ctx.client(srv, { query: { a: '1', list: ['x', 'y'] }, timestampRequests: true });
  await c.connected();
  assert.match(c.socket.transport.socket.url, /\/socketcluster\/\?a=1&list=x&list=y&t=\d+$/);
  assert.equal(await within(c.socket.invoke('echo', 'hi'), 3000, 'echo'), 'hi');
});

scenario('§17.2 URL: /socketcluster without the trailing slash and other paths are not upgraded', async (ctx) => {
  const srv = await ctx.server();
  for (const pathname of ['/socketcluster', '/', '/other/']) {
    const r = ctx.raw(srv, { pathname });
    await assert.rejects(within(r.opened, 3000, `upgrade of ${pathname}`));
    assert.ok(r.unexpectedResponse, `${pathname}: expected a non-101 HTTP response, got ${r.error && r.error.message}`);
    assert.notEqual(r.unexpectedResponse.statusCode, 101);
  }
  // ... while /socketcluster/ with a query is upgraded.
  const ok = ctx.raw(srv, { query: '?foo=bar' });
  await ok.handshake();
});

scenario('§17.3 ping v2: an idle client stays connected for 3x pingTimeout, pings are empty text frames', async (ctx) => {
  const srv = await ctx.server();
  const c = ctx.client(srv);
  await c.connected();
  const idleMs = 3 * PING_TIMEOUT_MS + 200;
  await sleep(idleMs); // the idle period IS the behaviour under test
  assert.equal(c.eventsNamed('disconnect').length, 0, 'no disconnect while idle');
  assert.equal(c.eventsNamed('connect').length, 1, 'no reconnect while idle');
  assert.equal(c.socket.state, 'open');
  const pings = c.frames.filter((f) => f.dir === 'S->C' && f.data === '');
  const pongs = c.frames.filter((f) => f.dir === 'C->S' && f.data === '');
  // pings every PING_INTERVAL_MS: expect well over a handful in the idle window
  assert.ok(pings.length >= Math.floor(idleMs / PING_INTERVAL_MS / 2), `expected many '' pings, got ${pings.length}`);
  assert.ok(pongs.length >= pings.length - 1, 'the client answered the pings');
  assert.equal(await within(c.socket.invoke('echo', 1), 3000, 'echo after idle'), 1);
});

scenario('§17.3 ping v2: a raw client that never answers pings is closed with 4001', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv, { autoPong: false });
  const t0 = Date.now();
  await r.handshake();
  const closed = await r.waitClose(PING_TIMEOUT_MS + 3000, 'close 4001 for a client that never pongs');
  assert.equal(closed.code, 4001);
  const pings = r.frames.filter((f) => f.dir === 'S->C' && f.data === '' && !f.binary);
  assert.ok(pings.length >= 1, 'the server sent v2 pings (empty text frames) before giving up');
  assert.ok(Date.now() - t0 >= PING_TIMEOUT_MS - 100, 'not closed before pingTimeout elapsed');
  assert.ok(!r.frames.some((f) => f.control), 'no WebSocket control-frame pings are needed for liveness');
});

scenario('§17.20 guard: a raw client silent for handshakeTimeout is closed with 4005', async (ctx) => {
  // The handshake timeout must be shorter than the ping timeout here: a silent client
  // cannot answer pings (a pong before the handshake is a 4009), so with equal values
  // 4001 and 4005 race.
  const handshakeTimeoutMs = 500;
  const srv = await ctx.server(['--handshake-timeout', `${handshakeTimeoutMs}ms`, '--ping-timeout', '3s']);
  const r = ctx.raw(srv, { autoPong: false });
  await within(r.opened, 3000, 'open');
  const t0 = Date.now();
  const closed = await r.waitClose(handshakeTimeoutMs + 2000, 'close 4005');
  assert.equal(closed.code, 4005);
  assert.ok(Date.now() - t0 >= handshakeTimeoutMs - 150, 'not before the handshake timeout');
});

scenario('§17.20 guard: an event before the handshake is closed with 4009', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await within(r.opened, 3000, 'open');
  r.sendJSON({ event: 'hello', data: 1 });
  const closed = await r.waitClose(2000, 'close 4009');
  assert.equal(closed.code, 4009);
});

scenario('§17.20 guard: a pong before the handshake is closed with 4009', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await within(r.opened, 3000, 'open');
  r.send('');
  const closed = await r.waitClose(2000, 'close 4009');
  assert.equal(closed.code, 4009);
});

scenario('§17.20 guard: #handshake without a numeric cid is closed with 4008', async (ctx) => {
  const srv = await ctx.server();
  const r1 = ctx.raw(srv);
  await within(r1.opened, 3000, 'open');
  r1.sendJSON({ event: '#handshake', data: {} });
  assert.equal((await r1.waitClose(2000, 'close 4008 (no cid)')).code, 4008);
  assert.equal(r1.packets().length, 0, 'no response to a handshake without cid');

  const r2 = ctx.raw(srv);
  await within(r2.opened, 3000, 'open');
  r2.sendJSON({ event: '#handshake', data: {}, cid: 'abc' });
  assert.equal((await r2.waitClose(2000, 'close 4008 (string cid)')).code, 4008);
});

scenario('handshake: the server accepts any cid for #handshake (the client counter is not reset)', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await within(r.opened, 3000, 'open');
  r.sendJSON({ event: '#handshake', data: { authToken: null }, cid: 7 });
  const res = await r.waitForPacket((p) => p.rid === 7, 2000, 'handshake answer with rid 7');
  assert.equal(typeof res.data.id, 'string');
  assert.equal(res.data.pingTimeout, PING_TIMEOUT_MS);
  assert.equal(res.data.isAuthenticated, false);
});

scenario('bad input after the handshake: malformed JSON and unknown events leave the connection open, others unaffected', async (ctx) => {
  const srv = await ctx.server();
  const other = await ctx.connectedClient(srv, {}, 'bystander');
  const otherNews = await other.subscribe('news');

  const r = ctx.raw(srv);
  await r.handshake();
  r.send('this is not json');
  r.send('{"broken json');
  r.send('[{"event":');
  r.send('42');
  r.send('{"neither":"event nor response"}');
  r.sendJSON({ rid: 999, data: 'nobody asked' });
  r.sendJSON({ event: 'someUnknownTransmit', data: { a: 1 } });
  r.sendJSON({ event: '#someUnknownHashEvent', data: 1 });
  r.send(Buffer.from(JSON.stringify({ event: 'binaryFrameTransmit', data: 1 }))); // binary frame

  // The connection is still open and answers an invoke.
  const res = await r.invoke('echo', { still: 'alive' });
  assert.deepEqual(res.data, { still: 'alive' });
  assert.equal(r.closed, null, 'connection stays open');

  // An unhandled invoke gets an error reply with a name.
  const unh = await r.invoke('noSuchProcedure', 1);
  assert.ok(unh.error, `expected an error reply, got ${JSON.stringify(unh)}`);
  assert.equal(typeof unh.error.name, 'string');
  assert.ok(unh.error.name.length > 0);
  assert.equal(unh.error.name, 'UnhandledEventError');

  // The bystander keeps working.
  assert.equal(await within(other.socket.invoke('echo', 'ok'), 3000, 'bystander echo'), 'ok');
  await within(other.socket.invokePublish('news', 'still flowing'), 3000, 'bystander publish');
  await waitFor(() => otherNews.includes('still flowing'), 3000, 'bystander to receive its publication');
  assert.equal(other.eventsNamed('disconnect').length, 0);
  assert.equal(r.closed, null);
});

scenario('bad input: a frame larger than --max-payload is closed with 1009; others unaffected', async (ctx) => {
  const srv = await ctx.server(['--max-payload', '4096']);
  const other = await ctx.connectedClient(srv, {}, 'bystander');
  const r = ctx.raw(srv);
  await r.handshake();
  // Just under the limit works.
  const okData = 'x'.repeat(3000);
  const res = await r.invoke('echo', okData);
  assert.equal(res.data, okData);
  // Over the limit is closed with 1009 (message too big).
  r.sendJSON({ event: 'echo', data: 'y'.repeat(8192), cid: 999 });
  const closed = await r.waitClose(3000, 'close 1009');
  assert.equal(closed.code, 1009);
  assert.equal(await within(other.socket.invoke('echo', 'fine'), 3000, 'bystander echo'), 'fine');
});

scenario('process: sockmesh exits promptly on SIGTERM', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  void c;
  const res = await srv.stop(5000);
  assert.ok(res.graceful, 'exited within 5 s of SIGTERM (no SIGKILL needed)');
  assert.notEqual(srv.exited, null, 'the process has exited');
});
