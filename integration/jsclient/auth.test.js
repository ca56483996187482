// JWT auth conformance (reference §8, §17 cases 13-18).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';

import {
  scenario, waitFor, within, rejectionOf, settle, signJwt, nowSec, AUTH_KEY, PING_INTERVAL_MS,
} from './lib/harness.js';

async function login(c, username, extra = {}) {
  const before = c.eventsNamed('authenticate').length;
  const res = await within(c.socket.invoke('login', { username, ...extra }), 3000, 'invoke login');
  assert.equal(res, 'ok');
  await waitFor(() => c.eventsNamed('authenticate').length > before, 3000, 'authenticate event after login');
  return c.eventsNamed('authenticate').at(-1).data;
}

/** Creates a client whose token storage already holds `token`, then connects it. */
async function clientWithToken(ctx, srv, token, label) {
  const c = ctx.client(srv, { autoConnect: false }, label);
  await c.socket.auth.saveToken(c.socket.authTokenName, token);
  c.socket.connect();
  return c;
}

scenario('§17.13 login: authenticate event, authState, claims with iat/exp (exp − iat = 86400)', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const t0 = nowSec();
  const ev = await login(c, 'alice');

  assert.equal(c.socket.authState, 'authenticated');
  assert.equal(ev.authToken.username, 'alice');
  assert.equal(typeof ev.authToken.iat, 'number');
  assert.equal(typeof ev.authToken.exp, 'number');
  assert.equal(ev.authToken.exp - ev.authToken.iat, 86400);
  assert.ok(Math.abs(ev.authToken.iat - t0) <= 5, `iat ${ev.authToken.iat} is now (${t0})`);
  assert.deepEqual(c.socket.authToken, ev.authToken);

  // The token is an HS256 JWT signed with --auth-key: re-signing its header+payload matches.
  const token = c.socket.signedAuthToken;
  const [h, p] = token.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url').toString('utf8'));
  assert.equal(header.alg, 'HS256');
  const sig = createHmac('sha256', AUTH_KEY).update(`${h}.${p}`).digest('base64url');
  assert.equal(token.split('.')[2], sig, 'signature verifies with the auth key');

  // Stored for the next handshake, delivered as a #setAuthToken transmit after the login response.
  assert.equal(await c.socket.auth.loadToken(c.socket.authTokenName), token);
  const pkts = c.receivedPackets();
  const setIdx = pkts.findIndex((x) => x.event === '#setAuthToken');
  assert.ok(setIdx >= 0);
  assert.deepEqual(pkts[setIdx].data, { token });
  assert.equal(pkts[setIdx].cid, undefined, '#setAuthToken is a transmit by default');

  // The server agrees.
  const who = await within(c.socket.invoke('whoami'), 3000, 'whoami');
  assert.equal(who.username, 'alice');
  assert.equal(who.exp - who.iat, 86400);

  // private.* is now allowed.
  await c.subscribe('private.room');
});

scenario('§17.14 token on reconnect: the new #handshake carries the token and is accepted', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  await login(c, 'bob');
  const token = c.socket.signedAuthToken;
  const setTokensBefore = c.receivedPackets().filter((p) => p.event === '#setAuthToken').length;

  await within(c.socket.invoke('disconnectMe', { code: 4000, reason: 'reconnect please' }), 3000, 'disconnectMe');
  await c.waitEvent('disconnect', 3000);
  await c.waitEventCount('connect', 2, 3000);
  const status = c.eventsNamed('connect').at(-1).data;
  assert.equal(status.isAuthenticated, true);
  assert.equal(status.authError, undefined);
  const hs = c.sentPackets().filter((p) => p.event === '#handshake');
  assert.equal(hs.length, 2);
  assert.equal(hs[1].data.authToken, token, 'the reconnect handshake presents the stored token');
  assert.notEqual(hs[1].cid, hs[0].cid, 'the client cid counter continues across connections');
  assert.equal(c.socket.authState, 'authenticated');
  const who = await within(c.socket.invoke('whoami'), 3000, 'whoami');
  assert.equal(who.username, 'bob');
  assert.equal(c.receivedPackets().filter((p) => p.event === '#setAuthToken').length, setTokensBefore, 'no new #setAuthToken needed');
});

scenario('§17.14 a valid token preloaded before the first connect is accepted in #handshake', async (ctx) => {
  const srv = await ctx.server();
  const token = signJwt({ username: 'carol', iat: nowSec(), exp: nowSec() + 3600 });
  const c = await clientWithToken(ctx, srv, token);
  const status = await c.connected();
  assert.equal(status.isAuthenticated, true);
  assert.equal(c.socket.authState, 'authenticated');
  assert.equal((await within(c.socket.invoke('whoami'), 3000, 'whoami')).username, 'carol');
  assert.equal(c.receivedPackets().filter((p) => p.event === '#removeAuthToken').length, 0);
});

scenario('§17.15 waitForAuth: no #subscribe until the token is issued, then with waitForAuth:true', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const got = c.collect('private.vault', { waitForAuth: true, data: { room: 7 } });
  await within(c.socket.invoke('echo', 'barrier'), 3000, 'barrier');
  assert.equal(c.sentPackets().filter((p) => p.event === '#subscribe').length, 0, 'nothing sent while unauthenticated');
  assert.equal(c.socket.getChannelState('private.vault'), 'pending');

  await login(c, 'dave');
  await waitFor(() => c.socket.isSubscribed('private.vault'), 3000, 'private.vault subscribed after login');
  const sub = c.sentPackets().find((p) => p.event === '#subscribe');
  assert.deepEqual(sub.data, { channel: 'private.vault', waitForAuth: true, data: { room: 7 } });
  await within(c.socket.invokePublish('private.vault', 'secret'), 3000, 'publish');
  await waitFor(() => got.includes('secret'), 3000, 'delivery on the private channel');
});

for (const [kind, makeToken, expectedName] of [
  ['expired', () => signJwt({ username: 'eve', iat: nowSec() - 100, exp: nowSec() - 50 }), 'AuthTokenExpiredError'],
  ['wrong-key', () => signJwt({ username: 'eve', iat: nowSec(), exp: nowSec() + 3600 }, 'not-the-server-key'), 'AuthTokenInvalidError'],
  ['malformed', () => 'garbage.token.value', 'AuthTokenInvalidError'],
]) {
  scenario(`§17.16 bad token (${kind}) in #handshake → authError ${expectedName}, isBadToken, #removeAuthToken, token gone`, async (ctx) => {
    const srv = await ctx.server();
    const token = makeToken();
    const c = await clientWithToken(ctx, srv, token);
    const status = await c.connected();
    assert.equal(status.isAuthenticated, false);
    assert.ok(status.authError, 'handshake status carries authError');
    assert.equal(status.authError.name, expectedName);
    assert.equal(status.authError.isBadToken, true);
    assert.equal(typeof status.authError.message, 'string');
    await c.waitEvent('removeAuthToken', 3000);
    assert.equal(c.eventsNamed('removeAuthToken')[0].data.oldAuthToken, token);
    await waitFor(async () => (await c.socket.auth.loadToken(c.socket.authTokenName)) === null, 3000, 'token storage to be empty');
    assert.equal(c.socket.authToken, null);
    assert.equal(c.socket.authState, 'unauthenticated');
    assert.ok(c.receivedPackets().some((p) => p.event === '#removeAuthToken'), 'server sent #removeAuthToken');
    assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);
    // The connection stays usable.
    assert.equal(c.socket.state, 'open');
  });
}

scenario('§17.16 authenticate(): garbage rejects AuthTokenInvalidError; a valid token authenticates', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const err = await rejectionOf(c.socket.authenticate('garbage'), 3000, "authenticate('garbage')");
  assert.equal(err.name, 'AuthTokenInvalidError');
  assert.equal(err.isBadToken, true);
  assert.equal(c.socket.authState, 'unauthenticated');
  await waitFor(() => c.receivedPackets().some((p) => p.event === '#removeAuthToken'), 3000, '#removeAuthToken after a bad #authenticate');

  const expired = signJwt({ username: 'x', iat: nowSec() - 100, exp: nowSec() - 10 });
  const err2 = await rejectionOf(c.socket.authenticate(expired), 3000, 'authenticate(expired)');
  assert.equal(err2.name, 'AuthTokenExpiredError');

  const good = signJwt({ username: 'frank', iat: nowSec(), exp: nowSec() + 600 });
  const status = await within(c.socket.authenticate(good), 3000, 'authenticate(good)');
  assert.equal(status.isAuthenticated, true);
  assert.ok(status.authError == null);
  assert.equal(c.socket.authState, 'authenticated');
  assert.equal((await within(c.socket.invoke('whoami'), 3000, 'whoami')).username, 'frank');

  // #authenticate without a cid is a protocol error (4008) on a raw socket.
  const r = ctx.raw(srv);
  await r.handshake();
  r.sendJSON({ event: '#authenticate', data: good });
  assert.equal((await r.waitClose(3000, 'close 4008 for #authenticate without cid')).code, 4008);
});

scenario('§17.17 deauth: client deauthenticate() → server-side unauthenticated', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  await login(c, 'gina');
  await c.socket.deauthenticate();
  assert.deepEqual(c.sentPackets().filter((p) => p.event === '#removeAuthToken').at(-1), { event: '#removeAuthToken' });
  assert.equal(c.socket.authState, 'unauthenticated');
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null, 'the server dropped the token');
  // private.* is refused again.
  c.collect('private.after');
  const ev = await c.waitEvent('subscribeFail', 3000, (d) => d.channel === 'private.after');
  assert.equal(ev.data.error.name, 'AuthRequiredError');
});

scenario('§17.17 deauth: server-initiated (logout) → deauthenticate + removeAuthToken, token removed', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  await login(c, 'hank');
  await within(c.socket.invoke('logout'), 3000, 'logout');
  await c.waitEvent('deauthenticate', 3000);
  await c.waitEvent('removeAuthToken', 3000);
  assert.equal(c.socket.authState, 'unauthenticated');
  assert.equal(c.socket.authToken, null);
  assert.equal(await c.socket.auth.loadToken(c.socket.authTokenName), null);
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);
  assert.equal(c.socket.state, 'open');
});

scenario('§17.18 expiry: a 1 s token is revoked with #removeAuthToken shortly after it expires', async (ctx) => {
  const srv = await ctx.server();
  const c = await ctx.connectedClient(srv);
  const ev = await login(c, 'ivy', { expiresIn: 1 });
  assert.equal(ev.authToken.exp - ev.authToken.iat, 1);
  const expMs = ev.authToken.exp * 1000;
  // exp has 1 s granularity; allow the check interval (a ping) plus slack.
  const rm = await c.waitEvent('removeAuthToken', 1000 + 5 * PING_INTERVAL_MS + 2000, () => true, 'removeAuthToken after expiry');
  assert.ok(rm.t >= expMs - 50, `revoked only after exp (revoked at ${rm.t}, exp ${expMs})`);
  assert.ok(rm.t <= expMs + 1000 + 5 * PING_INTERVAL_MS, `revoked within about a ping interval after exp (late by ${rm.t - expMs} ms)`);
  assert.equal(c.socket.authState, 'unauthenticated');
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);
  assert.equal(c.socket.state, 'open', 'expiry deauthenticates, it does not disconnect');
  await settle(100);
});

function unsignedJwt(payload) {
  const enc = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  return `${enc({ alg: 'none', typ: 'JWT' })}.${enc(payload)}.`;
}

scenario('auth: alg "none" tokens are refused as bad tokens (handshake and #authenticate)', async (ctx) => {
  const srv = await ctx.server();
  const token = unsignedJwt({ username: 'mallory', iat: nowSec(), exp: nowSec() + 3600 });
  const c = await clientWithToken(ctx, srv, token);
  const status = await c.connected();
  assert.equal(status.isAuthenticated, false, 'an unsigned token must not authenticate');
  assert.ok(status.authError, 'authError present');
  assert.equal(status.authError.isBadToken, true);
  assert.match(status.authError.name, /^AuthToken(Invalid)?Error$/);
  await c.waitEvent('removeAuthToken', 3000);
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);

  const err = await rejectionOf(c.socket.authenticate(token), 3000, 'authenticate(alg none)');
  assert.match(err.name, /^AuthToken(Invalid)?Error$/);
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);
});

scenario('auth: a token whose nbf is in the future is not accepted but is not a bad token (§8.3)', async (ctx) => {
  const srv = await ctx.server();
  const token = signJwt({ username: 'nora', iat: nowSec(), nbf: nowSec() + 3600, exp: nowSec() + 7200 });
  const c = await clientWithToken(ctx, srv, token);
  const status = await c.connected();
  assert.equal(status.isAuthenticated, false);
  assert.ok(status.authError, 'authError present');
  assert.equal(status.authError.name, 'AuthTokenNotBeforeError');
  assert.equal(status.authError.isBadToken, false);
  await within(c.socket.invoke('echo', 'barrier'), 3000, 'barrier');
  assert.equal(c.receivedPackets().filter((p) => p.event === '#removeAuthToken').length, 0, 'no #removeAuthToken for a not-yet-valid token');
  assert.equal(await within(c.socket.invoke('whoami'), 3000, 'whoami'), null);
});

scenario('auth: a non-string authToken in #handshake → AuthTokenError-family bad token + #removeAuthToken', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await within(r.opened, 3000, 'open');
  r.cid = 1;
  r.sendJSON({ event: '#handshake', data: { authToken: 12345 }, cid: 1 });
  const res = await r.waitForPacket((p) => p.rid === 1, 3000, 'handshake answer');
  assert.equal(res.data.isAuthenticated, false);
  assert.ok(res.data.authError, `authError expected in ${JSON.stringify(res)}`);
  assert.match(res.data.authError.name, /^AuthToken(Invalid)?Error$/);
  assert.equal(res.data.authError.isBadToken, true);
  await r.waitForPacket((p) => p.event === '#removeAuthToken', 3000, '#removeAuthToken');
  // #authenticate with null is a bad token too.
  const a = await r.invoke('#authenticate', null);
  assert.ok(a.error, `#authenticate null → error reply expected, got ${JSON.stringify(a)}`);
  assert.equal(a.error.name, 'AuthTokenInvalidError');
  assert.equal(a.error.isBadToken, true);
  assert.equal(r.closed, null);
});

scenario('auth: a token without exp is accepted (valid forever) and login answers before #setAuthToken', async (ctx) => {
  const srv = await ctx.server();
  const c = await clientWithToken(ctx, srv, signJwt({ username: 'olga' }));
  const status = await c.connected();
  assert.equal(status.isAuthenticated, true);
  assert.equal((await within(c.socket.invoke('whoami'), 3000, 'whoami')).username, 'olga');

  // login: the RPC response precedes the #setAuthToken transmit (and is not in the handshake write).
  const c2 = await ctx.connectedClient(srv);
  await login(c2, 'pete');
  const pkts = c2.receivedPackets();
  const loginCid = c2.sentPackets().find((p) => p.event === 'login').cid;
  const respIdx = pkts.findIndex((p) => p.rid === loginCid);
  const setIdx = pkts.findIndex((p) => p.event === '#setAuthToken');
  assert.ok(respIdx >= 0 && setIdx > respIdx, `login response (${respIdx}) before #setAuthToken (${setIdx})`);
});

scenario('auth: raw #authenticate then client #removeAuthToken (even with a cid) deauthenticates, connection stays open', async (ctx) => {
  const srv = await ctx.server();
  const r = ctx.raw(srv);
  await r.handshake();
  const good = signJwt({ username: 'quinn', iat: nowSec(), exp: nowSec() + 600 });
  const a = await r.invoke('#authenticate', good);
  assert.equal(a.data && a.data.isAuthenticated, true, JSON.stringify(a));
  assert.equal((await r.invoke('whoami')).data.username, 'quinn');
  r.sendJSON({ event: '#removeAuthToken', cid: 77 });
  const who = await r.invoke('whoami');
  assert.equal(who.data ?? null, null, 'deauthenticated by #removeAuthToken');
  assert.equal(r.closed, null);
});
