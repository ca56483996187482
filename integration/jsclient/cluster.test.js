// Cross-node delivery with the real client (reference §17 case 10, issue 3 item 3): the
// unmodified socketcluster-client on node 1 receives what a Go client (`sockmesh pub`, built
// on the client/ package) publishes on node 3, exactly once; a client on node 2 publishing
// reaches both.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

import { scenario, waitFor, within, settle, sockmeshBin } from './lib/harness.js';
import { clusterReady, interestKnown } from './lib/cluster.js';

const run = promisify(execFile);

scenario('§17.10 cross-node: socketcluster-client on n1 receives what a Go client publishes on n3, once', { timeout: 60000 }, async (ctx) => {
  const n1 = await ctx.server();
  const n2 = await ctx.server(['--join', `127.0.0.1:${n1.gossipPort}`]);
  const n3 = await ctx.server(['--join', `127.0.0.1:${n1.gossipPort}`]);
  await clusterReady([n1, n2, n3]);

  const a = await ctx.connectedClient(n1, {}, 'A@n1');
  const b = await ctx.connectedClient(n2, {}, 'B@n2');
  const got = await a.subscribe('news');
  const gotB = await b.subscribe('news');
  await interestKnown([n1, n2, n3], n1, 1);
  await interestKnown([n1, n2, n3], n2, 1);

  await within(
    run(sockmeshBin(), ['pub', '--url', n3.wsUrl, '--ack', 'news', '{"from":"go","n":1}']),
    10000,
    'sockmesh pub on n3',
  );
  await waitFor(() => got.length === 1 && gotB.length === 1, 5000, 'n1 and n2 clients to receive the n3 publication');
  assert.deepEqual(got[0], { from: 'go', n: 1 });

  await within(b.socket.invokePublish('news', { from: 'js', n: 2 }), 3000, 'invokePublish on n2');
  await waitFor(() => got.length === 2 && gotB.length === 2, 5000, 'the n2 publication on both nodes');
  assert.deepEqual(got[1], { from: 'js', n: 2 });
  await settle();
  assert.equal(got.length, 2, 'each publication delivered exactly once');
  assert.equal(gotB.length, 2, 'the publisher on n2 receives its own publication once');
});
