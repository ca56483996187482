// The HTTP API with the real client (issue 8 item 4): a publication through the API of
// node 2 reaches the unmodified socketcluster-client on node 1 and a Go client (`sockmesh
// sub`, built on the client/ package) on node 3; a missing key is refused.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';

import { scenario, waitFor, settle, sockmeshBin, freePorts } from './lib/harness.js';
import { clusterReady, interestKnown } from './lib/cluster.js';

const API_KEY = 'jsclient-api-key';

function apiPublish(apiPort, body, key = API_KEY) {
  const headers = { 'Content-Type': 'application/json' };
  if (key) headers.Authorization = `apikey ${key}`;
  return fetch(`http://127.0.0.1:${apiPort}/api/publish`, { method: 'POST', headers, body: JSON.stringify(body) });
}

scenario('API publish on n2 reaches socketcluster-client on n1 and a Go client on n3', { timeout: 60000 }, async (ctx) => {
  const [api1, api2, api3] = await freePorts(3);
  const apiArgs = (p) => ['--api-addr', `127.0.0.1:${p}`, '--api-key', API_KEY];
  const n1 = await ctx.server(apiArgs(api1));
  const n2 = await ctx.server([...apiArgs(api2), '--join', `127.0.0.1:${n1.gossipPort}`]);
  const n3 = await ctx.server([...apiArgs(api3), '--join', `127.0.0.1:${n1.gossipPort}`]);
  await clusterReady([n1, n2, n3]);

  const a = await ctx.connectedClient(n1, {}, 'A@n1');
  const got = await a.subscribe('news');
  const sub = spawn(sockmeshBin(), ['sub', '--url', n3.wsUrl, '--count', '1', '--timeout', '20s', 'news']);
  let goOut = '';
  sub.stdout.on('data', (d) => { goOut += d; });
  sub.stderr.on('data', (d) => { goOut += d; });
  const goExit = new Promise((resolve) => sub.on('exit', resolve));
  await interestKnown([n1, n2, n3], n1, 1);
  await interestKnown([n1, n2, n3], n3, 1);

  const refused = await apiPublish(api2, { channel: 'news', data: 'x' }, '');
  assert.equal(refused.status, 401);
  assert.equal((await refused.json()).error.code, 'unauthorized');

  const res = await apiPublish(api2, { channel: 'news', data: { from: 'api', n: 1 } });
  assert.equal(res.status, 200, await res.text());
  await waitFor(() => got.length === 1, 5000, 'the n1 client to receive the API publication');
  assert.deepEqual(got[0], { from: 'api', n: 1 });
  assert.equal(await goExit, 0, `sockmesh sub on n3: ${goOut}`);
  assert.match(goOut, /"from":"api"/);
  await settle();
  assert.equal(got.length, 1, 'delivered exactly once');
});
