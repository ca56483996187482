// A subscriber on the real socketcluster-client for integration/lb_test.go: connects (through
// a load balancer), subscribes to the given channels and prints one JSON line per event, each
// with t = Date.now(): connect, disconnect {code}, subscribed {ch}, msg {ch, data}.
// Usage: node lb-sub.cjs HOST PORT CH1,CH2,...
// autoReconnectOptions are short so that a crashed node's clients (close 1006: backoff) come
// back within the test; a drained node's clients (close 4000) reconnect at once regardless.
'use strict';
const socketClusterClient = require('socketcluster-client');

const [host, port, chans] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\n');
const socket = socketClusterClient.create({
  hostname: host, port: Number(port), path: '/socketcluster/',
  autoReconnectOptions: { initialDelay: 200, randomness: 200, multiplier: 1.5, maxDelay: 1000 },
});
(async () => { for await (const _ of socket.listener('connect')) out({ ev: 'connect' }); })();
(async () => { for await (const e of socket.listener('disconnect')) out({ ev: 'disconnect', code: e.code }); })();
(async () => { for await (const _ of socket.listener('error')) { /* reported by disconnect */ } })();
for (const ch of chans.split(',').filter(Boolean)) {
  const c = socket.subscribe(ch);
  (async () => { for await (const _ of c.listener('subscribe')) out({ ev: 'subscribed', ch }); })();
  (async () => { for await (const data of c) out({ ev: 'msg', ch, data }); })();
}
