// Recovery across reconnects with the unmodified socketcluster-client 20 and the repository's
// helper (clients/js/sockmesh-recovery.js, docs/recovery.md).
import assert from 'node:assert/strict';

import { withRecovery } from '../../clients/js/sockmesh-recovery.js';
import { scenario, waitFor, within, settle, FAST_RECONNECT } from './lib/harness.js';

// setup starts a node with recovery on rc.*, a keeper subscriber (the node keeps receiving
// the channel), a publisher, and client A subscribed through the helper, collecting what it
// receives and the recovery answers.
async function setup(ctx, extraArgs = []) {
  const srv = await ctx.server(['--recover-channels', 'rc.*', ...extraArgs]);
  const keeper = await ctx.connectedClient(srv, {}, 'keeper');
  await keeper.subscribe('rc.feed');
  const pub = await ctx.connectedClient(srv, {}, 'publisher');
  const a = await ctx.connectedClient(srv, { autoReconnectOptions: FAST_RECONNECT }, 'A');
  const rec = withRecovery(a.socket);
  const got = [];
  const answers = [];
  const ch = rec.subscribe('rc.feed');
  (async () => {
    for await (const d of ch) got.push(d);
  })();
  (async () => {
    for await (const ans of rec.answers()) answers.push(ans);
  })();
  await waitFor(() => a.socket.isSubscribed('rc.feed'), 3000, 'subscription');
  return { pub, a, rec, got, answers };
}

scenario('a client that loses its connection gets every missed publication once, in order, then the live ones', async (ctx) => {
  const { pub, a, rec, got, answers } = await setup(ctx);

  for (let i = 1; i <= 5; i++) await within(pub.socket.invokePublish('rc.feed', { n: i }), 3000, 'publish');
  await waitFor(() => got.length === 5, 3000, 'the first five');
  assert.ok(rec.position('rc.feed'), 'a position is known after publications');

  a.socket.disconnect();
  for (let i = 6; i <= 9; i++) await within(pub.socket.invokePublish('rc.feed', { n: i }), 3000, 'publish while away');
  a.socket.connect();
  await waitFor(() => got.length === 9, 5000, 'the four missed ones after the reconnect');
  await waitFor(() => answers.length === 1, 3000, 'the recovery answer');
  assert.deepEqual(answers[0], { channel: 'rc.feed', recovered: true, missed: 4 });

  await within(pub.socket.invokePublish('rc.feed', { n: 10 }), 3000, 'publish after');
  await waitFor(() => got.length === 10, 3000, 'the live one');
  await settle();
  assert.deepEqual(got.map((d) => d.n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 'each once, in order, data as published');
});

scenario('past the retention bound the client is told that recovery was incomplete', async (ctx) => {
  const { pub, a, got, answers } = await setup(ctx, ['--recover-messages', '3']);
  await within(pub.socket.invokePublish('rc.feed', 1), 3000, 'publish');
  await waitFor(() => got.length === 1, 3000, 'the first');
  a.socket.disconnect();
  for (let i = 2; i <= 8; i++) await within(pub.socket.invokePublish('rc.feed', i), 3000, 'publish while away');
  a.socket.connect();
  await waitFor(() => answers.length === 1, 5000, 'the recovery answer');
  assert.equal(answers[0].recovered, false);
  assert.match(answers[0].reason, /retention bound/);
  await waitFor(() => got.length === 4, 3000, 'what is still kept');
  assert.deepEqual(got, [1, 6, 7, 8]);
});
