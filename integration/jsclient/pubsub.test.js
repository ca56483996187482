// Publish/subscribe conformance (reference §7, §17 cases 5-8, 22).
import assert from 'node:assert/strict';

import { scenario, waitFor, within, settle } from './lib/harness.js';

scenario('§17.5 round trip: invokePublish resolves, subscribers (publisher included) get a deep-equal object', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, {}, 'A');
  const b = await ctx.connectedClient(srv, {}, 'B');
  const aNews = await a.subscribe('news');
  const bNews = await b.subscribe('news');

  const obj = { msg: 'hello', n: 42, nested: { list: [1, 'two', null, true], unicode: 'héllo ✓ 🚀' } };
  const ack = await within(b.socket.invokePublish('news', obj), 3000, 'invokePublish ack');
  assert.equal(ack, undefined, 'a successful #publish invoke is answered {"rid":n} (no data)');

  await waitFor(() => aNews.length === 1, 3000, 'A to receive the publication');
  assert.deepEqual(aNews[0], obj);
  await waitFor(() => bNews.length === 1, 3000, 'the publisher B to receive its own publication');
  assert.deepEqual(bNews[0], obj);
  // Delivered as a transmit {"event":"#publish","data":{"channel","data"}} (no cid).
  const wire = a.receivedPackets().find((p) => p.event === '#publish');
  assert.equal(wire.cid, undefined, '#publish is transmitted, never invoked');
  assert.deepEqual(wire.data, { channel: 'news', data: obj });
  await settle();
  assert.equal(aNews.length, 1, 'delivered exactly once');
});

scenario('publisher receives its own publication (transmitPublish and invokePublish)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const mine = await a.subscribe('self');
  a.socket.transmitPublish('self', 'one');
  await within(a.socket.invokePublish('self', 'two'), 3000, 'invokePublish');
  await waitFor(() => mine.length === 2, 3000, 'both own publications');
  assert.deepEqual(mine, ['one', 'two']);
});

scenario('§17.6 transmitPublish delivers; binary Buffer arrives as {base64:true,data}', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, {}, 'A');
  const b = await ctx.connectedClient(srv, {}, 'B');
  const got = await a.subscribe('bin');

  b.socket.transmitPublish('bin', 'hello without ack');
  await waitFor(() => got.length === 1, 3000, 'transmitPublish delivery');
  assert.equal(got[0], 'hello without ack');

  b.socket.transmitPublish('bin', Buffer.from([1, 2, 3]));
  await waitFor(() => got.length === 2, 3000, 'binary publication');
  assert.deepEqual(got[1], { base64: true, data: 'AQID' });

  b.socket.transmitPublish('bin', { blob: Buffer.from([1, 2, 3, 0xfa]), label: 'x' });
  await waitFor(() => got.length === 3, 3000, 'nested binary publication');
  assert.deepEqual(got[2], { blob: { base64: true, data: 'AQID+g==' }, label: 'x' });

  // No answer to a transmit: the publisher saw no response for the #publish frames.
  const pubs = b.sentPackets().filter((p) => p.event === '#publish');
  assert.ok(pubs.every((p) => p.cid === undefined));
});

scenario('§17.6 publish data types pass through opaquely (null, numbers, strings, arrays, empty)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = await a.subscribe('types');
  const values = [null, 0, -1.5, 1e21, '', 'str', [], [1, [2, [3]]], {}, { a: { b: { c: [] } } }, true, false];
  for (const v of values) await within(a.socket.invokePublish('types', v), 3000, 'invokePublish');
  await waitFor(() => got.length === values.length, 3000, 'all typed publications');
  assert.deepEqual(got, values);
});

scenario('§17.7 subscribe rejection: denied.* → subscribeFail with the server name/message', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  a.collect('denied.x');
  const ev = await a.waitEvent('subscribeFail', 3000, (d) => d.channel === 'denied.x');
  assert.equal(ev.data.error.name, 'SubscribeDeniedError');
  assert.equal(ev.data.error.message, 'Subscription to denied.x is denied');
  assert.equal(a.socket.getChannelState('denied.x'), 'unsubscribed');
  assert.equal(a.eventsNamed('subscribe').length, 0);
  // The connection is unaffected.
  assert.equal(await within(a.socket.invoke('echo', 1), 3000, 'echo'), 1);
  assert.equal(a.eventsNamed('disconnect').length, 0);
});

scenario('§17.7 subscribe rejection: private.* while unauthenticated → AuthRequiredError', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  a.collect('private.room');
  const ev = await a.waitEvent('subscribeFail', 3000, (d) => d.channel === 'private.room');
  assert.equal(ev.data.error.name, 'AuthRequiredError');
  assert.equal(ev.data.error.message, 'Subscription to private.room requires authentication');
  assert.equal(a.socket.getChannelState('private.room'), 'unsubscribed');
});

scenario('§17.8 unsubscribe: no further publications reach the client (checked on the wire)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, {}, 'A');
  const control = await ctx.connectedClient(srv, {}, 'control');
  const aNews = await a.subscribe('news');
  const cNews = await control.subscribe('news');

  await within(control.socket.invokePublish('news', 'before'), 3000, 'publish');
  await waitFor(() => aNews.length === 1, 3000, 'A to receive "before"');

  a.socket.unsubscribe('news');
  assert.equal(a.socket.getChannelState('news'), 'unsubscribed');
  // #unsubscribe is a transmit with the bare channel name; use an invoke round trip
  // on the same connection as a barrier so the server has processed it.
  assert.deepEqual(a.sentPackets().find((p) => p.event === '#unsubscribe'), { event: '#unsubscribe', data: 'news' });
  await within(a.socket.invoke('echo', 'barrier'), 3000, 'barrier echo');

  await within(control.socket.invokePublish('news', 'after'), 3000, 'publish');
  await waitFor(() => cNews.includes('after'), 3000, 'control to receive "after"');
  await settle();
  assert.deepEqual(a.wirePublications('news'), ['before'], 'the server sent nothing for news after #unsubscribe');
  // Server-side count (when exported): only control's subscription to news is left.
  if ((await srv.metric('sockmesh_subscriptions')) !== null) {
    await waitFor(async () => (await srv.metric('sockmesh_subscriptions')) === 1, 2000, 'sockmesh_subscriptions to drop to 1');
  }

  // Re-subscribing works again.
  await a.subscribe('news');
  await within(control.socket.invokePublish('news', 'again'), 3000, 'publish');
  await waitFor(() => aNews.includes('again'), 3000, 'A to receive after re-subscribing');
});

scenario('channel isolation: a client subscribed to chat never receives chatroom (nor ch, cha, chat.x)', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, {}, 'A');
  const control = await ctx.connectedClient(srv, {}, 'control');
  const aChat = await a.subscribe('chat');
  const seen = {};
  for (const ch of ['chatroom', 'cha', 'chat.x', 'Chat', 'chat ']) seen[ch] = await control.subscribe(ch);

  for (const ch of Object.keys(seen)) await within(control.socket.invokePublish(ch, `to ${ch}`), 3000, `publish ${ch}`);
  await within(control.socket.invokePublish('chat', 'to chat'), 3000, 'publish chat');
  for (const ch of Object.keys(seen)) await waitFor(() => seen[ch].length === 1, 3000, `control to receive on ${ch}`);
  await waitFor(() => aChat.length === 1, 3000, 'A to receive on chat');
  await settle();

  assert.deepEqual(aChat, ['to chat']);
  const onWire = a.receivedPackets().filter((p) => p.event === '#publish').map((p) => p.data.channel);
  assert.deepEqual(onWire, ['chat'], 'the server sent A only publications of chat');
});

scenario('burst: all 200 publications arrive in order at every subscriber', async (ctx) => {
  const srv = await ctx.server();
  const pub = await ctx.connectedClient(srv, {}, 'publisher');
  const subs = [];
  for (let i = 0; i < 3; i++) subs.push(await ctx.connectedClient(srv, {}, `sub${i}`));
  const lists = [];
  for (const s of subs) lists.push(await s.subscribe('burst'));
  const own = await pub.subscribe('burst');

  const N = 200;
  for (let i = 0; i < N; i++) pub.socket.transmitPublish('burst', { i });
  const expected = Array.from({ length: N }, (_, i) => ({ i }));
  for (const [k, list] of [...lists, own].entries()) {
    await waitFor(() => list.length >= N, 5000, `subscriber ${k} to receive ${N} messages (has ${list.length})`);
    assert.deepEqual(list, expected, `subscriber ${k} got every message once, in order`);
  }

  // The same with acknowledged publishes issued concurrently.
  const acks = [];
  for (let i = N; i < 2 * N; i++) acks.push(pub.socket.invokePublish('burst', { i }));
  await within(Promise.all(acks), 5000, `${N} publish acks`);
  const expected2 = Array.from({ length: 2 * N }, (_, i) => ({ i }));
  for (const [k, list] of [...lists, own].entries()) {
    await waitFor(() => list.length >= 2 * N, 5000, `subscriber ${k} to receive ${2 * N} messages (has ${list.length})`);
    assert.deepEqual(list, expected2, `subscriber ${k} got the acknowledged burst in order`);
  }
});

scenario('server-side publish (serverPublish) has the same shape as a client publish', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = await a.subscribe('news');
  await within(a.socket.invoke('serverPublish', { channel: 'news', data: { from: 'server', n: 1 } }), 3000, 'serverPublish');
  await waitFor(() => got.length === 1, 3000, 'server publication');
  assert.deepEqual(got[0], { from: 'server', n: 1 });
  const wire = a.receivedPackets().find((p) => p.event === '#publish');
  assert.deepEqual(wire, { event: '#publish', data: { channel: 'news', data: { from: 'server', n: 1 } } });
});

scenario('subscribe with data and waitForAuth:false fields is accepted; double subscribe delivers once', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  const got = await a.subscribe('withdata', { data: { foo: 'bar' }, priority: 5 });
  const sent = a.sentPackets().find((p) => p.event === '#subscribe');
  assert.deepEqual(sent.data, { channel: 'withdata', data: { foo: 'bar' } });
  // A raw second #subscribe for the same channel on the same connection.
  const r = ctx.raw(srv);
  await r.handshake();
  const s1 = await r.invoke('#subscribe', { channel: 'dup' });
  const s2 = await r.invoke('#subscribe', { channel: 'dup' });
  assert.equal(s1.error, undefined, JSON.stringify(s1));
  assert.equal(s2.error, undefined, JSON.stringify(s2));
  await within(a.socket.invokePublish('dup', 'once'), 3000, 'publish dup');
  await within(a.socket.invokePublish('withdata', 'x'), 3000, 'publish withdata');
  await waitFor(() => got.length === 1, 3000, 'withdata delivery');
  await r.waitForPacket((p) => p.event === '#publish' && p.data.channel === 'dup', 3000, 'dup delivery');
  await settle();
  assert.equal(r.packets().filter((p) => p.event === '#publish').length, 1, 'a double subscription still delivers once');
});

scenario('limits: empty and over-long channel names get subscribeFail (not a hang)', async (ctx) => {
  const srv = await ctx.server(['--max-channel-length', '16']);
  const a = await ctx.connectedClient(srv);
  a.collect('');
  const long = 'x'.repeat(17);
  a.collect(long);
  const okName = 'y'.repeat(16);
  await a.subscribe(okName);
  const emptyFail = await a.waitEvent('subscribeFail', 3000, (d) => d.channel === '', 'subscribeFail for the empty channel');
  assert.ok(emptyFail.data.error instanceof Error);
  assert.equal(typeof emptyFail.data.error.name, 'string');
  assert.notEqual(emptyFail.data.error.name, 'BadConnectionError');
  const longFail = await a.waitEvent('subscribeFail', 3000, (d) => d.channel === long, 'subscribeFail for the 17-byte channel');
  assert.equal(typeof longFail.data.error.name, 'string');
  assert.notEqual(longFail.data.error.name, 'BadConnectionError');
  assert.equal(a.socket.getChannelState(long), 'unsubscribed');
  assert.equal(a.socket.getChannelState(okName), 'subscribed');
  assert.equal(a.eventsNamed('disconnect').length, 0);

  // Raw: a non-string channel and a missing channel are error replies too.
  const r = ctx.raw(srv);
  await r.handshake();
  for (const data of [{ channel: 5 }, {}, 'plain', null]) {
    const res = await r.invoke('#subscribe', data);
    assert.ok(res.error, `#subscribe ${JSON.stringify(data)} → expected an error reply, got ${JSON.stringify(res)}`);
    assert.equal(typeof res.error.name, 'string');
  }
  assert.equal(r.closed, null);
});

scenario('limits: publishing to an empty or over-long channel is an error reply', async (ctx) => {
  const srv = await ctx.server(['--max-channel-length', '16']);
  const r = ctx.raw(srv);
  await r.handshake();
  for (const channel of ['', 'x'.repeat(17)]) {
    const pub = await r.invoke('#publish', { channel, data: 1 });
    assert.ok(pub.error, `#publish to ${JSON.stringify(channel)} → expected an error reply, got ${JSON.stringify(pub)}`);
    assert.equal(typeof pub.error.name, 'string');
  }
  assert.equal(r.closed, null);
});

scenario('limits: subscriptions beyond --max-subscriptions get error replies', async (ctx) => {
  const srv = await ctx.server(['--max-subscriptions', '3']);
  const a = await ctx.connectedClient(srv);
  const names = ['s1', 's2', 's3', 's4', 's5'];
  for (const n of names) a.collect(n);
  await a.waitEventCount('subscribe', 3, 3000);
  await a.waitEventCount('subscribeFail', 2, 3000);
  const ok = a.eventsNamed('subscribe').map((e) => e.data.channel).sort();
  const failed = a.eventsNamed('subscribeFail');
  assert.deepEqual(ok, ['s1', 's2', 's3']);
  assert.deepEqual(failed.map((e) => e.data.channel).sort(), ['s4', 's5']);
  for (const f of failed) {
    assert.equal(typeof f.data.error.name, 'string');
    assert.notEqual(f.data.error.name, 'BadConnectionError');
  }
  // After an unsubscribe there is room again.
  a.socket.unsubscribe('s1');
  await within(a.socket.invoke('echo', 'barrier'), 3000, 'barrier');
  await a.subscribe('s6');
  assert.equal(a.eventsNamed('disconnect').length, 0);
});

scenario('§17.22 kickOut: kickOut event with the message, channel removed, no further publications', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, {}, 'A');
  const control = await ctx.connectedClient(srv, {}, 'control');
  const aRoom = await a.subscribe('room1');
  const aOther = await a.subscribe('room2');
  const cRoom = await control.subscribe('room1');

  await within(a.socket.invoke('kick', { channel: 'room1', message: 'You have been kicked' }), 3000, 'kick');
  const ev = await a.waitEvent('kickOut', 3000);
  assert.deepEqual(ev.data, { channel: 'room1', message: 'You have been kicked' });
  assert.equal(a.socket.getChannelState('room1'), 'unsubscribed');
  const wire = a.receivedPackets().find((p) => p.event === '#kickOut');
  assert.equal(wire.cid, undefined, '#kickOut is a transmit');
  assert.deepEqual(wire.data, { channel: 'room1', message: 'You have been kicked' });

  await within(control.socket.invokePublish('room1', 'after kick'), 3000, 'publish');
  await waitFor(() => cRoom.includes('after kick'), 3000, 'control to receive');
  await settle();
  assert.deepEqual(aRoom, []);
  assert.deepEqual(a.wirePublications('room1'), [], 'the server unsubscribed A from room1');

  // Other subscriptions are untouched; a kick without a message omits it.
  await within(control.socket.invokePublish('room2', 'still here'), 3000, 'publish');
  await waitFor(() => aOther.includes('still here'), 3000, 'room2 still delivered');
  await within(a.socket.invoke('kick', { channel: 'room2' }), 3000, 'kick room2');
  const ev2 = await a.waitEvent('kickOut', 3000, (d) => d.channel === 'room2');
  assert.equal(ev2.data.message, undefined);
});

scenario('publish errors: #publish with a bad channel is an error reply; transmit errors are silent', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await r.handshake();
  for (const data of [{ data: 1 }, { channel: 7, data: 1 }, 'str']) {
    const res = await r.invoke('#publish', data);
    assert.ok(res.error, `#publish ${JSON.stringify(data)} → expected an error reply, got ${JSON.stringify(res)}`);
    assert.equal(typeof res.error.name, 'string');
  }
  r.sendJSON({ event: '#publish', data: { data: 1 } });
  const after = await r.invoke('echo', 'alive');
  assert.equal(after.data, 'alive');
  // #unsubscribe with a cid for a channel we are not in is answered (error) rather than ignored.
  const un = await r.invoke('#unsubscribe', 'notsubscribed');
  assert.ok('rid' in un);
});

scenario('disconnect drops all of the socket\'s subscriptions server-side', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv, { autoReconnect: false }, 'A');
  for (const ch of ['d1', 'd2', 'd3']) await a.subscribe(ch);
  const control = await ctx.connectedClient(srv, {}, 'control');
  const cGot = await control.subscribe('d1');
  const before = await srv.metric('sockmesh_subscriptions');
  if (before !== null) assert.equal(before, 4);
  a.socket.disconnect();
  if (before !== null) {
    await waitFor(async () => (await srv.metric('sockmesh_subscriptions')) === 1, 3000, 'sockmesh_subscriptions to drop to 1 after the disconnect');
  } else {
    ctx.t.diagnostic('sockmesh_subscriptions not exported; only checking that delivery continues');
  }
  await within(control.socket.invokePublish('d1', 'after'), 3000, 'publish');
  await waitFor(() => cGot.includes('after'), 3000, 'control still receives');
});

scenario('limits: refused and repeated subscriptions do not use up --max-subscriptions', async (ctx) => {
  const srv = await ctx.server(['--max-subscriptions', '2']);
  const r = ctx.raw(srv);
  await r.handshake();
  for (const ch of ['denied.a', 'denied.b', 'private.c']) {
    const res = await r.invoke('#subscribe', { channel: ch });
    assert.ok(res.error, `${ch} is refused`);
  }
  for (const ch of ['one', 'one', 'two']) {
    const res = await r.invoke('#subscribe', { channel: ch });
    assert.equal(res.error, undefined, `#subscribe ${ch} → ${JSON.stringify(res)} (a refused or repeated subscription must not count)`);
  }
  const third = await r.invoke('#subscribe', { channel: 'three' });
  assert.ok(third.error, 'the third distinct channel exceeds the limit of 2');
  // Unsubscribing a channel we are not in, and publishing to a channel nobody has, are harmless.
  r.sendJSON({ event: '#unsubscribe', data: 'never-subscribed' });
  const pub = await r.invoke('#publish', { channel: 'nobody-listens', data: 1 });
  assert.equal(pub.error, undefined);
  assert.equal(r.closed, null);
});

scenario('auth refresh: a second login replaces the token; private.* subscription survives', async (ctx) => {
  const srv = await ctx.server();
  const a = await ctx.connectedClient(srv);
  await within(a.socket.invoke('login', { username: 'first' }), 3000, 'login 1');
  await a.waitEvent('authenticate', 3000);
  const got = await a.subscribe('private.refresh');
  await within(a.socket.invoke('login', { username: 'second' }), 3000, 'login 2');
  await waitFor(() => a.socket.authToken && a.socket.authToken.username === 'second', 3000, 'the refreshed token');
  assert.equal((await within(a.socket.invoke('whoami'), 3000, 'whoami')).username, 'second');
  await within(a.socket.invokePublish('private.refresh', 'still'), 3000, 'publish');
  await waitFor(() => got.includes('still'), 3000, 'delivery after refresh');
});
