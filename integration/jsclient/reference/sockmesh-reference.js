#!/usr/bin/env node
// The upstream socketcluster-server v20 dressed up with sockmesh's command line and
// `--demo` application, so the conformance suite can be checked against the
// implementation it imitates:
//
//   (cd reference && npm ci) && SOCKMESH_BIN=$PWD/reference/sockmesh-reference.js npm test
//
// A test that fails here is (almost always) a wrong test, not a sockmesh bug.
// Only the flags the suite uses are understood; mesh/gossip addresses are ignored.
'use strict';

const http = require('node:http');
const socketClusterServer = require('socketcluster-server');

function parseDuration(s) {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m)$/.exec(s);
  if (!m) throw new Error(`bad duration ${s}`);
  return Number(m[1]) * { ms: 1, s: 1000, m: 60000 }[m[2]];
}

const args = process.argv.slice(2);
if (args[0] === 'serve') args.shift();
const flags = {};
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (!a.startsWith('--')) continue;
  const name = a.slice(2);
  if (name === 'demo') {
    flags.demo = true;
  } else {
    flags[name] = args[++i];
  }
}

const [wsHost, wsPort] = (flags['ws-addr'] || '127.0.0.1:8000').split(':');
const [adminHost, adminPort] = (flags['admin-addr'] || '127.0.0.1:8001').split(':');
const maxChannelLength = Number(flags['max-channel-length'] || 256);

const httpServer = http.createServer();
const agServer = socketClusterServer.attach(httpServer, {
  authKey: flags['auth-key'],
  pingInterval: parseDuration(flags['ping-interval'] || '8s'),
  pingTimeout: parseDuration(flags['ping-timeout'] || '30s'),
  handshakeTimeout: parseDuration(flags['handshake-timeout'] || '10s'),
  maxPayload: Number(flags['max-payload'] || 1048576),
  socketChannelLimit: Number(flags['max-subscriptions'] || 1000),
});

function namedError(name, message, extra = {}) {
  const err = new Error(message);
  err.name = name;
  Object.assign(err, extra);
  return err;
}

agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND, async (middlewareStream) => {
  for await (const action of middlewareStream) {
    if (action.type === action.PUBLISH_IN) {
      const ch = action.channel;
      if (typeof ch !== 'string' || ch.length === 0 || Buffer.byteLength(ch) > maxChannelLength) {
        action.block(namedError('InvalidActionError', 'Publish channel name was malformatted'));
        continue;
      }
    }
    if (action.type === action.SUBSCRIBE) {
      const ch = action.channel;
      if (typeof ch !== 'string' || ch.length === 0 || Buffer.byteLength(ch) > maxChannelLength) {
        action.block(namedError('InvalidActionError', 'Subscribe channel name was malformatted'));
        continue;
      }
      if (flags.demo && ch.startsWith('denied.')) {
        action.block(namedError('SubscribeDeniedError', `Subscription to ${ch} is denied`));
        continue;
      }
      if (flags.demo && ch.startsWith('private.') && !action.socket.authToken) {
        action.block(namedError('AuthRequiredError', `Subscription to ${ch} requires authentication`));
        continue;
      }
    }
    action.allow();
  }
});

const demoProcedures = {
  async echo(socket, req) {
    req.end(req.data);
  },
  async login(socket, req) {
    const { username, expiresIn } = req.data || {};
    req.end('ok');
    const opts = expiresIn != null ? { expiresIn } : undefined;
    await socket.setAuthToken({ username }, opts);
  },
  async logout(socket, req) {
    req.end();
    socket.deauthenticate();
  },
  async whoami(socket, req) {
    req.end(socket.authToken || null);
  },
  async fail(socket, req) {
    req.error(namedError('CustomError', 'Something went wrong', { code: 123 }));
  },
  async kick(socket, req) {
    const { channel, message } = req.data || {};
    req.end();
    socket.kickOut(channel, message);
  },
  async serverTransmit(socket, req) {
    const { event, data } = req.data || {};
    req.end();
    socket.transmit(event, data);
  },
  async serverInvoke(socket, req) {
    const { event, data } = req.data || {};
    try {
      const answer = await socket.invoke(event, data);
      req.end({ data: answer });
    } catch (err) {
      req.error(namedError(err.name, err.message));
    }
  },
  async serverPublish(socket, req) {
    const { channel, data } = req.data || {};
    await agServer.exchange.invokePublish(channel, data);
    req.end();
  },
  async disconnectMe(socket, req) {
    const { code, reason } = req.data || {};
    req.end();
    setTimeout(() => socket.disconnect(code, reason), 10);
  },
};

(async () => {
  for await (const { socket } of agServer.listener('connection')) {
    if (!flags.demo) continue;
    for (const [name, fn] of Object.entries(demoProcedures)) {
      (async () => {
        for await (const req of socket.procedure(name)) {
          fn(socket, req).catch((err) => {
            try {
              req.error(err);
            } catch {
              // already answered
            }
          });
        }
      })();
    }
  }
})();

// Answer invokes nobody handles with UnhandledEventError (sockmesh behaviour).
agServer.setMiddleware(agServer.MIDDLEWARE_INBOUND_RAW, async (stream) => {
  for await (const action of stream) {
    action.allow();
    try {
      const msg = typeof action.data === 'string' ? action.data : action.data.toString();
      const trimmed = msg.trim();
      if (!trimmed.startsWith('{') && !trimmed.startsWith('[')) continue;
      let packets = JSON.parse(trimmed);
      if (!Array.isArray(packets)) packets = [packets];
      for (const p of packets) {
        if (p && typeof p.event === 'string' && typeof p.cid === 'number' && !['#handshake', '#authenticate', '#removeAuthToken', '#subscribe', '#unsubscribe', '#publish'].includes(p.event) && !demoProcedures[p.event]) {
          const sock = action.socket;
          setTimeout(() => {
            sock.sendObject({ rid: p.cid, error: { name: 'UnhandledEventError', message: `No handler for invoke event ${p.event}` } });
          }, 0);
        }
      }
    } catch {
      // raw message
    }
  }
});

httpServer.listen(Number(wsPort), wsHost);

const admin = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end('ok');
});
admin.listen(Number(adminPort), adminHost);

process.on('SIGTERM', () => {
  agServer.close();
  httpServer.close();
  admin.close();
  setTimeout(() => process.exit(0), 100);
});
