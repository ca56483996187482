// Robustness: slow consumers, fan-out, second handshake, invalid UTF-8, drain on SIGTERM.
import assert from 'node:assert/strict';

import { scenario, waitFor, within, settle } from './lib/harness.js';

scenario('slow consumer: a client that stops reading is disconnected; others keep receiving', { timeout: 40000 }, async (ctx) => {
  const srv = await ctx.server(['--send-queue', '262144']);
  const fast = await ctx.connectedClient(srv, {}, 'fast');
  const fastGot = await fast.subscribe('firehose');
  const slow = ctx.raw(srv);
  await slow.handshake();
  const sub = await slow.invoke('#subscribe', { channel: 'firehose' });
  assert.equal(sub.error, undefined);
  // Stop reading: nothing is consumed from the TCP socket any more.
  slow.ws._socket.pause();

  const pub = await ctx.connectedClient(srv, {}, 'publisher');
  const N = 2000;
  const blob = 'z'.repeat(8 * 1024);
  const t0 = Date.now();
  const fastAlive = () => {
    const d = fast.eventsNamed('disconnect')[0];
    if (d) throw new Error(`the fast subscriber was disconnected (code ${d.data.code}) after ${fastGot.length} messages`);
  };
  // Paced so that this process (which also runs the fast subscriber) is never the
  // bottleneck: at most 16 messages (128 KiB, half the send queue) in flight beyond
  // what 'fast' has consumed. 16 MB in all, far more than the kernel buffers of the
  // stalled connection plus its 256 KiB queue.
  for (let i = 0; i < N; i++) {
    pub.socket.transmitPublish('firehose', { i, blob });
    if (i % 8 === 7) {
      await waitFor(() => fastAlive() || fastGot.length >= i - 8, 10000, `the fast subscriber to keep up (message ${i}, has ${fastGot.length})`);
    }
  }
  await waitFor(() => fastAlive() || fastGot.length >= N, 10000, `the fast subscriber to receive all ${N} messages (has ${fastGot.length})`);
  const elapsed = Date.now() - t0;
  assert.ok(fastGot.every((m, k) => m.i === k), 'in order, none lost');
  ctx.t.diagnostic(`fast subscriber received ${N} x 8 KiB in ${elapsed} ms next to a stalled reader`);

  // Resume reading: the server must have given up on the stalled connection.
  slow.ws._socket.resume();
  const closed = await slow.waitClose(15000, 'the slow consumer to be disconnected');
  const delivered = slow.packets().filter((p) => p.event === '#publish').length;
  assert.ok(delivered < N, `the stalled client was cut off (received ${delivered} of ${N}) with close ${closed.code}`);
  assert.equal(fast.eventsNamed('disconnect').length, 0, 'the fast subscriber was not disconnected');
});

scenario('fan-out: 50 subscribers each receive every publication exactly once', async (ctx) => {
  const srv = await ctx.server();
  const subs = [];
  for (let i = 0; i < 50; i++) subs.push(ctx.raw(srv));
  await Promise.all(subs.map((r) => r.handshake()));
  await Promise.all(subs.map((r) => r.invoke('#subscribe', { channel: 'fan' })));
  const pub = await ctx.connectedClient(srv);
  for (let i = 0; i < 20; i++) await within(pub.socket.invokePublish('fan', i), 3000, 'publish');
  for (const [k, r] of subs.entries()) {
    await waitFor(() => r.packets().filter((p) => p.event === '#publish').length >= 20, 5000, `subscriber ${k}`);
  }
  await settle();
  for (const r of subs) {
    assert.deepEqual(r.packets().filter((p) => p.event === '#publish').map((p) => p.data.data), Array.from({ length: 20 }, (_, i) => i));
  }
});

scenario('a second #handshake on an open socket is answered with the same id', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  const first = await r.handshake();
  const again = await r.invoke('#handshake', { authToken: null });
  assert.ok(again.data, `expected a handshake status, got ${JSON.stringify(again)}`);
  assert.equal(again.data.id, first.id);
  assert.equal(r.closed, null);
  assert.equal((await r.invoke('echo', 1)).data, 1);
});

scenario('invalid UTF-8 in a channel name is refused (error reply or close 1007), others unaffected', async (ctx) => {
  const srv = await ctx.server();
  const other = await ctx.connectedClient(srv);
  const r = ctx.raw(srv);
  await r.handshake();
  const bytes = Buffer.concat([
    Buffer.from('{"event":"#subscribe","data":{"channel":"bad'),
    Buffer.from([0xff, 0xfe]),
    Buffer.from('"},"cid":42}'),
  ]);
  r.frames.push({ t: Date.now(), dir: 'C->S', data: bytes.toString('latin1') + '  (as bytes, 0xff 0xfe inside the name)' });
  r.ws.send(bytes, { binary: false });
  await waitFor(() => r.closed || r.packets().find((p) => p.rid === 42), 3000, 'an answer to the invalid channel name');
  if (!r.closed) {
    const res = r.packets().find((p) => p.rid === 42);
    assert.ok(res.error, `expected an error reply for a non-UTF-8 channel name, got ${JSON.stringify(res)}`);
  } else {
    assert.equal(r.closed.code, 1007);
  }
  assert.equal(await within(other.socket.invoke('echo', 'ok'), 3000, 'bystander echo'), 'ok');
});

scenario('drain: SIGTERM closes clients with a code that makes the client reconnect, then exits 0', async (ctx) => {
  const srv = await ctx.server(['--drain-duration', '300ms']);
  const c = await ctx.connectedClient(srv);
  await c.subscribe('news');
  const stopping = srv.stop(5000);
  const dis = await c.waitEvent('disconnect', 5000);
  const res = await stopping;
  assert.ok(res.graceful, 'exited without SIGKILL');
  assert.equal(res.code, 0, 'exit status 0');
  assert.notEqual(dis.data.code, 1000, 'not 1000 (the client would never reconnect)');
  assert.ok(dis.data.code < 4500, `close code ${dis.data.code} must be < 4500 (≥ 4500 means never reconnect)`);
  await waitFor(() => c.socket.pendingReconnect || c.eventsNamed('connecting').length > 0, 2000, 'the client to schedule a reconnect');
});

scenario('drain: once every client has gone, SIGTERM does not keep waiting out --drain-duration', async (ctx) => {
  // 3 clients, drain spread over 6 s (a close every 2 s). The first client is closed by
  // the server at once; the other two leave by themselves right after SIGTERM. With
  // nobody left to close, the process should finish its shutdown promptly instead of
  // sleeping the remaining 2 x 2 s of the spread.
  const srv = await ctx.server(['--drain-duration', '6s']);
  const cs = [];
  for (let i = 0; i < 3; i++) cs.push(await ctx.connectedClient(srv, { autoReconnect: false }, `c${i}`));
  const t0 = Date.now();
  const stopping = srv.stop(15000);
  await waitFor(() => cs.some((c) => c.eventsNamed('disconnect').length), 3000, 'the first drain close');
  for (const c of cs) c.dispose();
  const res = await stopping;
  const took = Date.now() - t0;
  assert.ok(res.graceful);
  assert.ok(took < 3500, `exited ${took} ms after SIGTERM although every client had left within ~100 ms (drain keeps sleeping for sockets already closed)`);
});

scenario('cid values: non-integer, zero, negative and large cids are echoed verbatim in rid (§2)', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await r.handshake();
  for (const cid of [2 ** 40, 0, -3, 1.5]) {
    r.sendJSON({ event: 'echo', data: { cid }, cid });
    const res = await r.waitForPacket((p) => p.rid === cid, 2000, `a response with rid ${cid}`);
    assert.deepEqual(res.data, { cid });
  }
  assert.equal(r.closed, null);
});

scenario('#handshake without data is answered (no token presented)', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await within(r.opened, 3000, 'open');
  r.cid = 1;
  r.sendJSON({ event: '#handshake', cid: 1 });
  const res = await r.waitForPacket((p) => p.rid === 1, 2000, 'handshake answer');
  assert.equal(typeof res.data.id, 'string');
  assert.equal(res.data.isAuthenticated, false);
  assert.equal(res.data.authError, undefined);
});

scenario('large payloads under the default 1 MiB limit: 900 KB echo and publication', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = await a.subscribe('big');
  const big = 'b'.repeat(900 * 1024);
  assert.equal((await within(a.socket.invoke('echo', big), 5000, 'big echo')).length, big.length);
  await within(a.socket.invokePublish('big', { big }), 5000, 'big publish');
  await waitFor(() => got.length === 1, 5000, 'big publication');
  assert.equal(got[0].big, big);
});

scenario('channel length limit counts bytes (UTF-8), multi-byte names within it work', async (ctx) => {
  const srv = await ctx.server(['--max-channel-length', '16']);
  const a = await ctx.connectedClient(srv);
  const ok = 'é'.repeat(8); // 16 bytes
  const tooLong = 'é'.repeat(9); // 18 bytes, 9 characters
  const got = await a.subscribe(ok);
  a.collect(tooLong);
  await a.waitEvent('subscribeFail', 3000, (d) => d.channel === tooLong, 'subscribeFail for an 18-byte (9-character) name');
  await within(a.socket.invokePublish(ok, 'ü'), 3000, 'publish');
  await waitFor(() => got.length === 1, 3000, 'delivery on a multi-byte channel');
  assert.equal(got[0], 'ü');
});
