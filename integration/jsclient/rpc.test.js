// Events, RPC and batching conformance (reference §6, §9, §17 cases 11, 12, 21).
import assert from 'node:assert/strict';

import { scenario, waitFor, within, rejectionOf } from './lib/harness.js';

scenario('§17.11 RPC: echo answers its data unchanged (all JSON types, and no data)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const values = [{ x: 1 }, 'str', 0, 3.25, true, false, null, [], [1, { a: [2] }], { deep: { er: { est: 'ü✓' } } }, ''];
  for (const v of values) {
    assert.deepEqual(await within(a.socket.invoke('echo', v), 3000, 'echo'), v);
  }
  assert.equal(await within(a.socket.invoke('echo'), 3000, 'echo without data'), undefined);
});

scenario('§17.11 RPC: fail rejects with the server name, message and extra fields', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const err = await rejectionOf(a.socket.invoke('fail', 'please'), 3000, 'invoke fail');
  assert.equal(err.name, 'CustomError');
  assert.equal(err.message, 'Something went wrong');
  assert.equal(err.code, 123);
  const wire = a.receivedPackets().find((p) => p.error);
  assert.deepEqual(wire.error, { name: 'CustomError', message: 'Something went wrong', code: 123 });
});

scenario('§17.11 RPC: an unhandled invoke gets an error reply with a name (not a timeout)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, { ackTimeout: 2000 });
  const err = await rejectionOf(a.socket.invoke('noSuchProcedure', { a: 1 }), 3000, 'unhandled invoke');
  assert.notEqual(err.name, 'TimeoutError', 'the server answered instead of letting the call time out');
  assert.equal(err.name, 'UnhandledEventError');
  assert.equal(typeof err.message, 'string');
  // Non-reserved names starting with # are ordinary events too.
  const err2 = await rejectionOf(a.socket.invoke('#foo', 1), 3000, 'unhandled #foo invoke');
  assert.notEqual(err2.name, 'TimeoutError');
  assert.equal(typeof err2.name, 'string');
  // Still connected.
  assert.equal(await within(a.socket.invoke('echo', 'ok'), 3000, 'echo'), 'ok');
});

scenario('§17.11 RPC: many concurrent invokes are each answered with their own rid', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const calls = [];
  for (let i = 0; i < 100; i++) calls.push(a.socket.invoke('echo', { i }));
  const results = await within(Promise.all(calls), 5000, '100 echoes');
  assert.deepEqual(results, Array.from({ length: 100 }, (_, i) => ({ i })));
});

scenario('server transmit: serverTransmit delivers the event to the client receiver', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = [];
  (async () => {
    for await (const data of a.socket.receiver('serverEvent')) got.push(data);
  })();
  await within(a.socket.invoke('serverTransmit', { event: 'serverEvent', data: { hello: 'client' } }), 3000, 'serverTransmit');
  await waitFor(() => got.length === 1, 3000, 'serverEvent');
  assert.deepEqual(got[0], { hello: 'client' });
  const wire = a.receivedPackets().find((p) => p.event === 'serverEvent');
  assert.equal(wire.cid, undefined, 'a transmit carries no cid');
});

scenario('§17.12 server → client invoke: the client procedure answers, the server receives the value and errors', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  (async () => {
    for await (const req of a.socket.procedure('clientProc')) req.end({ answer: 42, q: req.data.q });
  })();
  (async () => {
    for await (const req of a.socket.procedure('clientProcErr')) {
      const err = new Error('Client refuses');
      err.name = 'ClientRefusal';
      req.error(err);
    }
  })();

  const res = await within(a.socket.invoke('serverInvoke', { event: 'clientProc', data: { q: 1 } }), 4000, 'serverInvoke clientProc');
  assert.deepEqual(res, { data: { answer: 42, q: 1 } });
  const inv = a.receivedPackets().find((p) => p.event === 'clientProc');
  assert.equal(typeof inv.cid, 'number', 'the server invoked (with a numeric cid)');
  assert.deepEqual(inv.data, { q: 1 });

  // A second server invoke uses a different cid.
  const res2 = await within(a.socket.invoke('serverInvoke', { event: 'clientProc', data: { q: 2 } }), 4000, 'second serverInvoke');
  assert.deepEqual(res2, { data: { answer: 42, q: 2 } });
  const cids = a.receivedPackets().filter((p) => p.event === 'clientProc').map((p) => p.cid);
  assert.notEqual(cids[0], cids[1]);

  // The client's error reaches the server, which reports its name/message back.
  let errInfo;
  try {
    const r = await within(a.socket.invoke('serverInvoke', { event: 'clientProcErr', data: { q: 3 } }), 4000, 'serverInvoke clientProcErr');
    errInfo = r && (r.error || r);
  } catch (err) {
    errInfo = err;
  }
  assert.equal(errInfo.name, 'ClientRefusal', `expected the client's error name back, got ${JSON.stringify(errInfo)}`);
  assert.equal(errInfo.message, 'Client refuses');
});

scenario('§17.21 batching: batchOnHandshake sends subscriptions as one array, all acknowledged', async (ctx) => {
  const srv = await ctx.server();
  const a = ctx.client(srv, { batchOnHandshake: true, autoConnect: false });
  const lists = ['b1', 'b2', 'b3', 'b4'].map((ch) => a.collect(ch));
  a.socket.connect();
  await a.connected();
  await a.waitEventCount('subscribe', 4, 3000);
  const arrays = a.frames.filter((f) => f.dir === 'C->S' && f.data.startsWith('['));
  assert.ok(arrays.length >= 1, 'the client did send a batch (array) frame');
  assert.ok(arrays.some((f) => JSON.parse(f.data).filter((p) => p.event === '#subscribe').length >= 2), 'a batch held several #subscribe packets');
  await within(a.socket.invokePublish('b3', 'x'), 3000, 'publish');
  await waitFor(() => lists[2].length === 1, 3000, 'delivery on a batch-subscribed channel');
});

scenario('§17.21 batching: startBatching with mixed transmits, invokes and publishes', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = await a.subscribe('batched');
  a.socket.startBatching();
  const calls = [];
  for (let i = 0; i < 5; i++) {
    a.socket.transmit('someTransmit', i);
    calls.push(a.socket.invoke('echo', { i }));
    a.socket.transmitPublish('batched', { t: i });
    calls.push(a.socket.invokePublish('batched', { p: i }));
  }
  calls.push(a.socket.invoke('fail').catch((e) => e.name));
  const results = await within(Promise.all(calls), 5000, 'batched calls');
  const echoes = results.filter((r) => r && typeof r === 'object');
  assert.deepEqual(echoes, Array.from({ length: 5 }, (_, i) => ({ i })));
  assert.equal(results.at(-1), 'CustomError');
  await waitFor(() => got.length === 10, 3000, '10 batched publications');
  const expected = [];
  for (let i = 0; i < 5; i++) expected.push({ t: i }, { p: i });
  assert.deepEqual(got, expected, 'publications from a batch are delivered in order');
  a.socket.stopBatching();
  const arrays = a.frames.filter((f) => f.dir === 'C->S' && f.data.startsWith('['));
  assert.ok(arrays.some((f) => JSON.parse(f.data).length >= 10), 'the client sent a large batch');
  assert.equal(await within(a.socket.invoke('echo', 'after'), 3000, 'echo after batching'), 'after');
});

scenario('batching (raw): a JSON array frame is processed in order; responses may be batched or not', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await r.handshake();
  r.send(JSON.stringify([
    { event: '#subscribe', data: { channel: 'arr' }, cid: 10 },
    { event: '#publish', data: { channel: 'arr', data: 'first' }, cid: 11 },
    { event: 'echo', data: 'e', cid: 12 },
    { event: '#publish', data: { channel: 'arr', data: 'second' } },
  ]));
  for (const rid of [10, 11, 12]) await r.waitForPacket((p) => p.rid === rid, 3000, `response rid ${rid}`);
  assert.equal(r.packets().find((p) => p.rid === 12).data, 'e');
  await waitFor(() => r.packets().filter((p) => p.event === '#publish').length === 2, 3000, 'both publications');
  assert.deepEqual(r.packets().filter((p) => p.event === '#publish').map((p) => p.data.data), ['first', 'second']);
  assert.ok(r.frames.filter((f) => f.dir === 'S->C').every((f) => !f.binary), 'the server sends text frames only');
});
