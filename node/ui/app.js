// sockmesh status page: polls /cluster and /metrics of this node and of every member (their
// admin URLs, which must list this page's origin in --admin-allow-origins) once a second, and
// draws the cluster, the links and the last minutes. No dependencies, no build step.
'use strict';

// The admin token comes once in the link (/ui?token=...), is kept for this tab only and
// taken out of the address bar; every request sends it as a bearer token.
const TOKEN_KEY = 'sockmesh_admin_token';
const token = (() => {
  const q = new URLSearchParams(location.search);
  const t = q.get('token');
  if (t === null) return sessionStorage.getItem(TOKEN_KEY) || '';
  sessionStorage.setItem(TOKEN_KEY, t);
  q.delete('token');
  const rest = q.toString();
  window.history.replaceState(null, '', location.pathname + (rest ? '?' + rest : '') + location.hash);
  return t;
})();

const POLL_MS = 1000;
const HISTORY = 300; // points kept (5 minutes at 1 s)
const FETCH_TIMEOUT_MS = 900;
const PALETTE = ['#58a6ff', '#3fb950', '#d29922', '#bc8cff', '#ff7b72', '#39c5cf', '#e3b341', '#f778ba'];
const SVGNS = 'http://www.w3.org/2000/svg';

const nodes = new Map(); // logical name -> {admin, cluster, metrics, prev, rates, ok, err}
const history = [];      // {t, byNode: {name: {conns, pub, del, meshSent, loss}}}
let selfName = '';

// ---- fetching -------------------------------------------------------------------------

async function fetchWithTimeout(url) {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS);
  try {
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    const r = await fetch(url, { cache: 'no-store', signal: ctl.signal, headers });
    if (r.status === 401) throw new Error((url || 'this node') + ': needs the admin token (open /ui?token=TOKEN)');
    if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
    return r;
  } finally {
    clearTimeout(timer);
  }
}

async function readNode(base) {
  const [c, m] = await Promise.all([
    fetchWithTimeout(base + '/cluster').then(r => r.json()),
    fetchWithTimeout(base + '/metrics').then(r => r.text()),
  ]);
  return { cluster: c, metrics: parseMetrics(m) };
}

// parseMetrics reads the Prometheus text format into name -> [{labels, value}].
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split('\n')) {
    if (!line || line[0] === '#') continue;
    const m = /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    if (m[2]) {
      const re = /(\w+)="((?:[^"\\]|\\.)*)"/g;
      let l;
      while ((l = re.exec(m[2]))) labels[l[1]] = l[2];
    }
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: parseFloat(m[3]) });
  }
  return out;
}

function metric(ms, name, match) {
  let s = 0;
  for (const e of (ms && ms.get(name)) || []) {
    if (!match || Object.entries(match).every(([k, v]) => e.labels[k] === v)) s += e.value;
  }
  return s;
}

// ---- polling and rates --------------------------------------------------------------------

function counters(n) {
  const ms = n.metrics, c = {
    pubLocal: metric(ms, 'sockmesh_publications_total', { origin: 'local' }),
    pubMesh: metric(ms, 'sockmesh_publications_total', { origin: 'mesh' }),
    delLocal: metric(ms, 'sockmesh_deliveries_total', { origin: 'local' }),
    delMesh: metric(ms, 'sockmesh_deliveries_total', { origin: 'mesh' }),
    drops: metric(ms, 'sockmesh_delivery_drops_total'),
    slow: metric(ms, 'sockmesh_ws_slow_consumer_disconnects_total'),
    peers: {},
  };
  for (const p of n.cluster.peers || []) c.peers[p.name] = { sent: p.sent, received: p.received, gaps: p.gaps, dropped: p.dropped };
  return c;
}

function rate(cur, prev, dt) {
  if (prev === undefined || dt <= 0 || cur < prev) return 0;
  return (cur - prev) / dt;
}

async function poll() {
  const t = Date.now() / 1000;
  const errors = [];
  let self;
  try {
    self = await readNode('');
  } catch (e) {
    document.getElementById('updated').textContent = 'this node does not answer: ' + e.message;
    return;
  }
  selfName = self.cluster.self;
  const members = (self.cluster.members || []).slice();
  if (!members.some(m => m.name === selfName)) members.push({ name: selfName, status: 'alive' });
  const seen = new Set();
  await Promise.all(members.map(async m => {
    seen.add(m.name);
    let n = nodes.get(m.name);
    if (!n) { n = { name: m.name }; nodes.set(m.name, n); }
    n.status = m.status;
    n.admin = m.name === selfName ? location.origin : (m.admin || '');
    if (m.name === selfName) {
      Object.assign(n, self, { ok: true, err: '' });
    } else if (m.status !== 'alive' || !n.admin) {
      n.ok = false; n.err = m.status;
    } else {
      try {
        Object.assign(n, await readNode(n.admin), { ok: true, err: '' });
      } catch (e) {
        n.ok = false; n.err = 'unreachable';
        errors.push(m.name + ': ' + (e.name === 'AbortError' ? 'timeout' : e.message));
      }
    }
    if (n.ok) {
      const c = counters(n);
      const p = n.prev, dt = p ? t - p.t : 0;
      n.rates = {
        pubLocal: rate(c.pubLocal, p && p.pubLocal, dt), pubMesh: rate(c.pubMesh, p && p.pubMesh, dt),
        delLocal: rate(c.delLocal, p && p.delLocal, dt), delMesh: rate(c.delMesh, p && p.delMesh, dt),
        loss: 0, peers: {},
      };
      for (const [peer, pc] of Object.entries(c.peers)) {
        const pp = p && p.peers[peer];
        n.rates.peers[peer] = { sent: rate(pc.sent, pp && pp.sent, dt), received: rate(pc.received, pp && pp.received, dt) };
        n.rates.loss += rate(pc.gaps + pc.dropped, pp && pp.gaps + pp.dropped, dt);
      }
      n.rates.loss += rate(c.drops, p && p.drops, dt);
      n.counters = c;
      n.prev = Object.assign({ t }, c);
    } else {
      n.prev = null; n.rates = null;
    }
  }));
  for (const name of [...nodes.keys()]) if (!seen.has(name)) nodes.delete(name);

  const point = { t, byNode: {} };
  for (const n of nodes.values()) {
    if (!n.ok || !n.rates) continue;
    let meshSent = 0;
    for (const r of Object.values(n.rates.peers)) meshSent += r.sent;
    point.byNode[n.name] = {
      conns: n.cluster.connections || 0,
      pub: n.rates.pubLocal + n.rates.pubMesh,
      del: n.rates.delLocal + n.rates.delMesh,
      meshSent, loss: n.rates.loss,
    };
  }
  history.push(point);
  while (history.length > HISTORY) history.shift();

  render();
  document.getElementById('errors').textContent = errors.join(' · ');
  document.getElementById('updated').textContent = 'updated ' + new Date().toLocaleTimeString();
}

async function loop() {
  try { await poll(); } catch (e) { document.getElementById('errors').textContent = 'error: ' + e.message; }
  setTimeout(loop, POLL_MS);
}

// ---- rendering -----------------------------------------------------------------------

function el(name, attrs, text) {
  const e = document.createElementNS(SVGNS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === undefined || v === null || isNaN(v)) return '–';
  if (v >= 1e6) return (v / 1e6).toFixed(1) + 'M';
  if (v >= 1e4) return (v / 1e3).toFixed(0) + 'k';
  if (v >= 100) return v.toFixed(0);
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(v === 0 ? 0 : 2);
}

function peerOf(n, name) {
  return n && n.ok ? (n.cluster.peers || []).find(p => p.name === name) : undefined;
}

function sortedNodes() { return [...nodes.values()].sort((a, b) => a.name.localeCompare(b.name)); }

function colorOf(name) {
  const i = sortedNodes().findIndex(n => n.name === name);
  return PALETTE[(i < 0 ? 0 : i) % PALETTE.length];
}

function linkState(a, b) {
  // a's view of b is the link from b into a (a's subscribe socket to b), and vice versa.
  const ab = peerOf(a, b.name), ba = peerOf(b, a.name);
  const states = [ab && ab.link, ba && ba.link].filter(Boolean);
  if (states.length === 2 && states.every(s => s === 'up')) return 'up';
  if (states.some(s => s === 'up' || s === 'connecting')) return 'partial';
  return 'down';
}

function drawTopology() {
  const svg = document.getElementById('topology');
  svg.replaceChildren();
  const list = sortedNodes();
  const W = 560, H = 420, cx = W / 2, cy = H / 2 + 5, R = list.length > 1 ? 150 : 0;
  const pos = new Map();
  list.forEach((n, i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / list.length;
    pos.set(n.name, { x: cx + R * Math.cos(a), y: cy + R * Math.sin(a) });
  });
  const linkColor = { up: 'var(--up)', partial: 'var(--partial)', down: 'var(--down)' };
  const links = el('g', { class: 'links' });
  const labels = el('g', { class: 'labels' });
  for (let i = 0; i < list.length; i++) {
    for (let j = i + 1; j < list.length; j++) {
      const a = list[i], b = list[j], pa = pos.get(a.name), pb = pos.get(b.name);
      const st = linkState(a, b);
      const g = el('g', { 'data-link': a.name + '|' + b.name, 'data-state': st });
      g.appendChild(el('line', {
        x1: pa.x, y1: pa.y, x2: pb.x, y2: pb.y, stroke: linkColor[st],
        'stroke-width': st === 'up' ? 3 : 2, 'stroke-dasharray': st === 'up' ? '' : '6 4',
      }));
      const ra = a.rates && a.rates.peers[b.name], rb = b.rates && b.rates.peers[a.name];
      const mx = (pa.x + pb.x) / 2, my = (pa.y + pb.y) / 2;
      const t = el('text', { x: mx, y: my - 4, 'text-anchor': 'middle', class: 'rate' });
      t.textContent = `${a.name}→${b.name} ${fmt(ra && ra.sent)}/s`;
      const t2 = el('text', { x: mx, y: my + 9, 'text-anchor': 'middle', class: 'rate' });
      t2.textContent = `${b.name}→${a.name} ${fmt(rb && rb.sent)}/s`;
      labels.append(t, t2);
      const pab = peerOf(a, b.name), pba = peerOf(b, a.name);
      const loss = ['gaps', 'dropped'].map(k => (pab ? pab[k] : 0) + (pba ? pba[k] : 0));
      if (loss[0] || loss[1]) {
        labels.appendChild(el('text', { x: mx, y: my + 22, 'text-anchor': 'middle', class: 'rate', style: 'fill:var(--down)' },
          `gaps ${loss[0]} · dropped ${loss[1]}`));
      }
      const title = el('title');
      title.textContent = `${a.name} ⇄ ${b.name}: ${st}`;
      g.appendChild(title);
      links.appendChild(g);
    }
  }
  svg.append(links, labels);
  for (const n of list) {
    const p = pos.get(n.name);
    const status = n.ok ? n.status : (n.status === 'alive' ? 'unreachable' : n.status);
    const fill = status === 'alive' ? colorOf(n.name) : 'var(--down)';
    const g = el('g', { 'data-node': n.name, 'data-status': status, transform: `translate(${p.x},${p.y})` });
    g.appendChild(el('circle', { r: 40, fill, class: 'node-circle', opacity: n.ok ? 1 : 0.5 }));
    g.appendChild(el('text', { y: -4, 'text-anchor': 'middle', 'font-weight': n.name === selfName ? 700 : 500 }, n.name));
    if (n.ok) {
      const r = n.rates || {};
      g.appendChild(el('text', { y: 10, 'text-anchor': 'middle', class: 'sub', style: 'fill:#0f1419' },
        `${n.cluster.connections || 0} conn · ${n.cluster.local_channels || 0} ch`));
      g.appendChild(el('text', { y: 56, 'text-anchor': 'middle', class: 'sub' },
        `pub ${fmt((r.pubLocal || 0) + (r.pubMesh || 0))}/s · del ${fmt((r.delLocal || 0) + (r.delMesh || 0))}/s`));
    } else {
      g.appendChild(el('text', { y: 10, 'text-anchor': 'middle', class: 'sub', style: 'fill:#0f1419' }, status));
    }
    svg.appendChild(g);
  }
}

function cell(tr, v, cls) {
  const td = document.createElement('td');
  td.textContent = v;
  if (cls) td.className = cls;
  tr.appendChild(td);
}

function drawTables() {
  const nb = document.querySelector('#nodes tbody');
  nb.replaceChildren();
  for (const n of sortedNodes()) {
    const tr = document.createElement('tr');
    tr.dataset.row = n.name;
    cell(tr, n.name + (n.name === selfName ? ' (this)' : ''));
    tr.firstChild.title = n.admin || '';
    const status = n.ok ? n.status : (n.status === 'alive' ? 'unreachable' : n.status);
    cell(tr, status, 'st-' + status);
    if (!n.ok) { for (let i = 0; i < 7; i++) cell(tr, '–'); nb.appendChild(tr); continue; }
    const r = n.rates || {}, c = n.counters || {};
    cell(tr, n.cluster.ready ? 'yes' : 'no', n.cluster.ready ? '' : 'bad');
    cell(tr, n.cluster.connections || 0);
    cell(tr, n.cluster.local_channels || 0);
    cell(tr, `${fmt(r.pubLocal)} · ${fmt(r.pubMesh)}`);
    cell(tr, `${fmt(r.delLocal)} · ${fmt(r.delMesh)}`);
    cell(tr, c.drops || 0, c.drops ? 'bad' : '');
    cell(tr, c.slow || 0, c.slow ? 'bad' : '');
    nb.appendChild(tr);
  }
  const lb = document.querySelector('#links tbody');
  lb.replaceChildren();
  const now = Date.now();
  for (const n of sortedNodes()) {
    if (!n.ok) continue;
    for (const p of n.cluster.peers || []) {
      const tr = document.createElement('tr');
      const r = (n.rates && n.rates.peers[p.name]) || {};
      cell(tr, n.name);
      cell(tr, p.name);
      cell(tr, p.link, 'st-' + p.link);
      const hb = Date.parse(p.last_heartbeat);
      cell(tr, hb > 0 ? ((now - hb) / 1000).toFixed(1) + ' s ago' : 'never');
      cell(tr, p.channels + (p.interest_synced ? '' : ' (syncing)'));
      cell(tr, fmt(r.sent));
      cell(tr, fmt(r.received));
      cell(tr, p.gaps, p.gaps ? 'bad' : '');
      cell(tr, p.dropped, p.dropped ? 'bad' : '');
      cell(tr, p.queued);
      cell(tr, p.reconnects);
      lb.appendChild(tr);
    }
  }
}

const CHARTS = [
  ['conns', 'Connections'],
  ['pub', 'Publications handled /s'],
  ['del', 'Deliveries to clients /s'],
  ['meshSent', 'Mesh publications sent /s'],
  ['loss', 'Gaps + drops /s'],
];

function drawCharts() {
  const box = document.getElementById('charts');
  box.replaceChildren();
  const names = sortedNodes().map(n => n.name);
  const W = 300, H = 70, pad = 4;
  const t1 = history.length ? history[history.length - 1].t : 0;
  // The window grows from the first poll up to HISTORY seconds, then scrolls.
  const span = history.length ? Math.min(HISTORY, Math.max(10, t1 - history[0].t)) : HISTORY, t0 = t1 - span;
  for (const [key, title] of CHARTS) {
    let maxV = 0;
    for (const p of history) for (const v of Object.values(p.byNode)) maxV = Math.max(maxV, v[key]);
    const top = maxV > 0 ? maxV * 1.1 : 1;
    const div = document.createElement('div');
    div.className = 'chart';
    div.dataset.chart = key;
    const h = document.createElement('h3');
    h.textContent = `${title} — last ${Math.round(span)} s, max ${fmt(maxV)}`;
    const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: 'none' });
    for (const name of names) {
      const pts = history.filter(p => p.byNode[name] && p.t >= t0).map(p =>
        `${(pad + ((p.t - t0) / span) * (W - 2 * pad)).toFixed(1)},${(H - pad - (p.byNode[name][key] / top) * (H - 2 * pad)).toFixed(1)}`);
      if (pts.length) svg.appendChild(el('polyline', { points: pts.join(' '), fill: 'none', stroke: colorOf(name), 'stroke-width': 1.5, 'vector-effect': 'non-scaling-stroke' }));
    }
    const keys = document.createElement('div');
    keys.className = 'keys';
    for (const name of names) {
      const last = history.length && history[history.length - 1].byNode[name];
      const s = document.createElement('span');
      s.style.color = colorOf(name);
      s.textContent = `${name} ${last ? fmt(last[key]) : '–'}`;
      keys.appendChild(s);
    }
    div.append(h, svg, keys);
    box.appendChild(div);
  }
}

function render() {
  document.getElementById('self').textContent = selfName ? 'node ' + selfName + ' · ' + nodes.size + ' members' : '';
  drawTopology();
  drawTables();
  drawCharts();
}

loop();
