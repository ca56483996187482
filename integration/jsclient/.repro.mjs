import { Ctx, sleep } from './lib/harness.js';
const waitMs = Number(process.argv[2] || 0);
const results = [];
for (let i = 0; i < 12; i++) {
  const ctx = new Ctx({ diagnostic() {} });
  const srv = await ctx.server();
  const cs = [];
  for (let k = 0; k < 3; k++) cs.push(await ctx.connectedClient(srv));
  const r = ctx.raw(srv); await r.handshake();
  await cs[0].subscribe('x');
  for (const c of cs) c.dispose();
  r.dispose();
  if (waitMs) await sleep(waitMs);
  const t = Date.now();
  const res = await srv.stop(12000);
  results.push(Date.now() - t);
  if (Date.now() - t > 3000) console.log(srv.logTail(15));
}
console.log('wait', waitMs, 'exit times', results.join(' '));
