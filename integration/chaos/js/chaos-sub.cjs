// A chaos-suite subscriber on the real socketcluster-client (npm, from
// integration/jsclient/node_modules): subscribes to the given channels and prints one JSON
// line per event: connect, disconnect, subscribed, ready (all subscribed), msg {ch, data},
// and with RECOVER=1 (subscriptions through the repository's recovery helper,
// clients/js/sockmesh-recovery.js) answer {ch, recovered, missed, reason}.
// Usage: node chaos-sub.cjs HOST PORT CH1,CH2,...   (env JSCLIENT_DIR: where node_modules is)
'use strict';
const path = require('node:path');
const { pathToFileURL } = require('node:url');
const { createRequire } = require('node:module');
const dir = process.env.JSCLIENT_DIR || path.join(__dirname, '..', '..', 'jsclient');
const socketClusterClient = createRequire(path.join(dir, 'package.json'))('socketcluster-client');

const [host, port, chans] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');
const socket = socketClusterClient.create({
  hostname: host, port: Number(port), path: '/socketcluster/',
  autoReconnectOptions: { initialDelay: 100, randomness: 100, multiplier: 1.5, maxDelay: 1000 },
});

(async () => {
  let subscribe = (ch) => socket.subscribe(ch);
  if (process.env.RECOVER === '1') {
    const helper = path.join(__dirname, '..', '..', '..', 'clients', 'js', 'sockmesh-recovery.js');
    const { withRecovery } = await import(pathToFileURL(helper).href);
    const rec = withRecovery(socket);
    subscribe = (ch) => rec.subscribe(ch);
    (async () => {
      for await (const a of rec.answers()) out({ ev: 'answer', ch: a.channel, recovered: a.recovered, missed: a.missed, reason: a.reason || '' });
    })();
  }
  (async () => { for await (const _ of socket.listener('connect')) out({ ev: 'connect' }); })();
  (async () => { for await (const e of socket.listener('disconnect')) out({ ev: 'disconnect', code: e.code }); })();
  const channels = chans.split(',').filter(Boolean);
  let pending = channels.length;
  for (const ch of channels) {
    const c = subscribe(ch);
    (async () => {
      for await (const _ of c.listener('subscribe')) {
        out({ ev: 'subscribed', ch });
        if (--pending === 0) out({ ev: 'ready' });
      }
    })();
    (async () => { for await (const data of c) out({ ev: 'msg', ch, data }); })();
  }
})();
