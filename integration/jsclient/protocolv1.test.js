// Protocol v1: the unmodified socketcluster-client 14.3.2 (it speaks v1: ping '#1', pong '#2')
// against sockmesh --protocol-version 1. Before that flag, such a client never answered the
// server's '' ping and was cut with 4001 at every ping timeout, then reconnected, for ever.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';

import { scenario, waitFor, within, sleep, PING_TIMEOUT_MS } from './lib/harness.js';

const require = createRequire(import.meta.url);
const scV14 = require('socketcluster-client-v14');

function once(emitter, event, ms) {
  return within(new Promise((resolve) => emitter.once(event, resolve)), ms, event);
}

function call(socket, event, data) {
  return within(new Promise((resolve, reject) => {
    socket.emit(event, data, (err, res) => (err ? reject(err) : resolve(res)));
  }), 3000, event);
}

scenario('protocol v1: socketcluster-client 14 connects, calls, publishes, logs in and stays connected', async (ctx) => {
  const srv = await ctx.server(['--protocol-version', '1']);
  const socket = scV14.create({
    hostname: '127.0.0.1', port: srv.wsPort, path: '/socketcluster/', multiplex: false,
    autoReconnectOptions: { initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000 },
  });
  const disconnects = [];
  socket.on('disconnect', (code, reason) => disconnects.push({ code, reason }));
  socket.on('error', () => {});
  try {
    const status = await once(socket, 'connect', 5000);
    assert.equal(status.pingTimeout, PING_TIMEOUT_MS);
    assert.equal(await call(socket, 'echo', 'hi'), 'hi');

    const channel = socket.subscribe('v1chan');
    const got = [];
    channel.watch((data) => got.push(data));
    await waitFor(() => channel.state === 'subscribed', 3000, 'subscribed');
    for (let i = 0; i < 20; i++) {
      socket.publish('v1chan', i);
    }
    await waitFor(() => got.length === 20, 3000, '20 publications');
    assert.deepEqual(got, [...Array(20).keys()]);

    const authed = once(socket, 'authenticate', 3000);
    await call(socket, 'login', { username: 'alice' });
    await authed;
    assert.equal(socket.authToken.username, 'alice');

    // Three ping timeouts: a client that did not answer the pings would be cut meanwhile.
    await sleep(3 * PING_TIMEOUT_MS);
    assert.deepEqual(disconnects, [], 'no disconnect while the client answers #1 with #2');

    // Reconnect: the token is presented again and accepted.
    socket.disconnect();
    socket.connect();
    const again = await once(socket, 'connect', 5000);
    assert.equal(again.isAuthenticated, true);
    assert.equal(await call(socket, 'whoami', null).then((w) => JSON.stringify(w).includes('alice')), true);
  } finally {
    socket.destroy();
  }
});

scenario('protocol v1 client against the default (v2) server: cut at the ping timeout, as with socketcluster-server', async (ctx) => {
  const srv = await ctx.server();
  const socket = scV14.create({ hostname: '127.0.0.1', port: srv.wsPort, path: '/socketcluster/', multiplex: false, autoReconnect: false });
  socket.on('error', () => {});
  try {
    await once(socket, 'connect', 5000);
    const [code] = await within(new Promise((resolve) => socket.once('disconnect', (...a) => resolve(a))), 3 * PING_TIMEOUT_MS, 'disconnect');
    assert.ok(code === 4001 || code === 4000, `closed with ${code}`);
  } finally {
    socket.destroy();
  }
});
