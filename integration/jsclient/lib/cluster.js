// Helpers for tests that run several sockmesh nodes: wait for the cluster to form, and for
// a node's subscriptions to be known by the others (read from each node's /cluster).
import { waitFor, httpText } from './harness.js';

/** Resolves once every server is ready and sees all of them alive. */
export async function clusterReady(servers) {
  await waitFor(async () => {
    for (const s of servers) {
      const body = await httpText(`http://127.0.0.1:${s.adminPort}/cluster`);
      if (!body) return false;
      const v = JSON.parse(body);
      if (!v.ready || v.members.filter((m) => m.status === 'alive').length !== servers.length) return false;
    }
    return true;
  }, 15000, `${servers.length} nodes joined with links up`);
}

/** Resolves once every server other than `wanter` sees it wanting `n` channels. */
export async function interestKnown(servers, wanter, n) {
  await waitFor(async () => {
    for (const s of servers) {
      if (s === wanter) continue;
      const v = JSON.parse((await httpText(`http://127.0.0.1:${s.adminPort}/cluster`)) || '{}');
      const p = (v.peers || []).find((x) => x.name === wanter.name);
      if (!p || p.channels !== n) return false;
    }
    return true;
  }, 10000, `${wanter.name}'s subscription known cluster-wide`);
}
