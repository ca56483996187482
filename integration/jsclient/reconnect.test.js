// Reconnection, re-subscription and close-code policy (reference §7.5, §11, §17 cases 9, 19).
import assert from 'node:assert/strict';

import { scenario, waitFor, within, settle } from './lib/harness.js';

scenario('§17.9 resubscribe after the server closes with 4100 (disconnectMe): subscriptions come back', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv, {}, 'A');
  const control = await ctx.connectedClient(srv, {}, 'control');
  const low = await c.subscribe('low', { priority: 1 });
  const high = await c.subscribe('high', { priority: 10, data: { k: 'v' } });
  const mid = await c.subscribe('mid', { priority: 5 });

  await within(c.socket.invoke('disconnectMe', { code: 4100, reason: 'custom reason' }), 3000, 'disconnectMe');
  const dis = await c.waitEvent('disconnect', 3000);
  assert.equal(dis.data.code, 4100);
  assert.equal(dis.data.reason, 'custom reason');
  await c.waitEventCount('connect', 2, 5000);
  await waitFor(() => ['low', 'mid', 'high'].every((ch) => c.socket.isSubscribed(ch)), 3000, 're-subscriptions acknowledged');

  // The client re-sent the three #subscribe packets, by priority, with the original data.
  const hs = c.frames.filter((f) => f.dir === 'C->S' && f.data.includes('"#handshake"'));
  const afterReconnect = c.frames.slice(c.frames.indexOf(hs[1]));
  const subs = [];
  for (const f of afterReconnect) {
    if (f.dir !== 'C->S' || !f.data) continue;
    const v = JSON.parse(f.data);
    for (const p of Array.isArray(v) ? v : [v]) if (p.event === '#subscribe') subs.push(p.data);
  }
  assert.deepEqual(subs, [{ channel: 'high', data: { k: 'v' } }, { channel: 'mid' }, { channel: 'low' }]);

  for (const ch of ['low', 'mid', 'high']) await within(control.socket.invokePublish(ch, `${ch} again`), 3000, `publish ${ch}`);
  await waitFor(() => low.includes('low again') && mid.includes('mid again') && high.includes('high again'), 3000, 'publications after reconnect');
  // The old connection's subscriptions are gone server-side: each arrives once.
  await settle();
  assert.deepEqual([low, mid, high].map((l) => l.length), [1, 1, 1]);
});

scenario('§17.9 server restart (process killed, new process on the same port): reconnect, resubscribe, receive', { timeout: 45000 }, async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv, {}, 'A');
  const news = await c.subscribe('news');
  const other = await c.subscribe('other', { data: { x: 1 } });
  await within(c.socket.invokePublish('news', 'before'), 3000, 'publish before');
  await waitFor(() => news.length === 1, 3000, 'first delivery');

  await srv.kill();
  await c.waitEvent('disconnect', 5000);
  assert.equal(c.socket.state !== 'open', true);
  const srv2 = await ctx.restart(srv);
  await c.waitEventCount('connect', 2, 10000);
  await waitFor(() => c.socket.isSubscribed('news') && c.socket.isSubscribed('other'), 3000, 'subscriptions back after restart');

  const p = await ctx.connectedClient(srv2, {}, 'publisher');
  await within(p.socket.invokePublish('news', 'after restart'), 3000, 'publish after restart');
  await within(p.socket.invokePublish('other', 'other after restart'), 3000, 'publish other');
  await waitFor(() => news.includes('after restart') && other.includes('other after restart'), 3000, 'delivery after restart');
  assert.deepEqual(news, ['before', 'after restart']);
});

scenario('§17.19 close code 1000 from the server: the client stays closed', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const attempts = c.eventsNamed('connecting').length;
  await within(c.socket.invoke('disconnectMe', { code: 1000, reason: 'bye' }), 3000, 'disconnectMe');
  const dis = await c.waitEvent('disconnect', 3000);
  assert.equal(dis.data.code, 1000);
  assert.equal(c.socket.pendingReconnect, false);
  await settle(800); // several FAST_RECONNECT delays: nothing may happen
  assert.equal(c.socket.state, 'closed');
  assert.equal(c.eventsNamed('connecting').length, attempts, 'no reconnect attempt');
  assert.equal(c.eventsNamed('connect').length, 1);
});

scenario('§17.19 close code 4500 from the server: the client stays closed', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const attempts = c.eventsNamed('connecting').length;
  await within(c.socket.invoke('disconnectMe', { code: 4500, reason: 'bye 4500' }), 3000, 'disconnectMe');
  const dis = await c.waitEvent('disconnect', 3000);
  assert.equal(dis.data.code, 4500);
  assert.equal(dis.data.reason, 'bye 4500');
  assert.equal(c.socket.pendingReconnect, false);
  await settle(800);
  assert.equal(c.socket.state, 'closed');
  assert.equal(c.eventsNamed('connecting').length, attempts, 'no reconnect attempt');
  assert.equal(c.eventsNamed('connect').length, 1);
});

scenario('§17.19 close code 4100 from the server: pendingReconnect, then reconnects with backoff', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  await within(c.socket.invoke('disconnectMe', { code: 4100, reason: 'later' }), 3000, 'disconnectMe');
  const dis = await c.waitEvent('disconnect', 3000);
  assert.equal(dis.data.code, 4100);
  // pendingReconnect is set synchronously in the client's close handling.
  assert.ok(c.socket.pendingReconnect || c.eventsNamed('connect').length > 1, 'a reconnect was scheduled');
  await c.waitEventCount('connect', 2, 3000);
});

scenario('§17.19 close code 4001 from the server: reconnected within 1 s', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv, { autoReconnectOptions: { initialDelay: 5000, randomness: 0, multiplier: 1, maxDelay: 5000 } });
  await within(c.socket.invoke('disconnectMe', { code: 4001, reason: '' }), 3000, 'disconnectMe');
  const dis = await c.waitEvent('disconnect', 3000);
  assert.equal(dis.data.code, 4001);
  // With a 5 s backoff configured, only the immediate-reconnect rule for 4001 can make this.
  await c.waitEventCount('connect', 2, 1000);
  assert.ok(c.eventsNamed('connect')[1].t - dis.t < 1000);
});
