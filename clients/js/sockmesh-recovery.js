// sockmesh recovery helper for socketcluster-client (docs/recovery.md). Plain ES module, no
// build step, no dependency: copy it next to your code or import it from here.
//
//   import { create } from 'socketcluster-client';
//   import { withRecovery } from './sockmesh-recovery.js';
//   const socket = create({ hostname, port });
//   const rec = withRecovery(socket);
//   const channel = rec.subscribe('chat.room1');          // instead of socket.subscribe
//   for await (const msg of channel) { ... }               // missed messages come first
//   for await (const answer of rec.answers()) { ... }      // {channel, recovered, missed, reason}
//
// It keeps each channel's last position (read from the #publish packets, which carry it
// beside the data the app receives) in the object socketcluster-client sends as the
// subscription's data on every automatic resubscribe, so a client that reconnects — to the
// same node or another — asks for what it missed. The node answers with a
// `sockmesh:recovery` event; `recovered: false` says some of it could not be recovered.
//
// Every restart of a publishing node is a new origin in a position. So that a long-lived
// client's position does not grow by one per restart, an origin heard nothing from for
// `horizon` ms (in the publications' own times; default an hour) is forgotten when another
// origin appears, and is then judged as one the client never heard from (docs/recovery.md).

const HOUR = 60 * 60 * 1000;

/**
 * @param {object} socket an AGClientSocket from socketcluster-client (v16 or later)
 * @param {{horizon?: number}} [options] horizon: ms after which a silent origin is forgotten
 *   (default an hour; Infinity: never)
 */
export function withRecovery(socket, { horizon = HOUR } = {}) {
  /** channel name -> the subscription data object ({recover: {seqs, time}} once known) */
  const states = new Map();
  /** the subscription data object -> per origin the time of its last publication */
  const heard = new WeakMap();

  // forget drops the origins heard last more than horizon before the position's time; the
  // origin of the last publication (whose time is the position's) always stays.
  const forget = (pos, times) => {
    for (const [origin, at] of times) {
      if (at < pos.time - horizon) {
        times.delete(origin);
        delete pos.seqs[origin];
      }
    }
  };

  const take = (pkt) => {
    if (!pkt || pkt.event !== '#publish' || !pkt.data || !Array.isArray(pkt.data.pos)) return;
    const state = states.get(pkt.data.channel);
    if (!state) return;
    const [origin, seq, time] = pkt.data.pos;
    if (typeof origin !== 'string' || typeof seq !== 'number' || typeof time !== 'number') return;
    const pos = state.recover || (state.recover = { seqs: {}, time: 0 });
    let times = heard.get(state);
    if (!times) heard.set(state, (times = new Map()));
    const known = Object.hasOwn(pos.seqs, origin);
    if (!(pos.seqs[origin] >= seq)) pos.seqs[origin] = seq;
    if (!(times.get(origin) >= time)) times.set(origin, time);
    if (time > pos.time) pos.time = time;
    if (!known) forget(pos, times);
  };

  (async () => {
    for await (const { message } of socket.listener('message')) {
      // Cheap test first: only recovery channels' publications carry a position.
      if (typeof message !== 'string' || !message.includes('"pos":')) continue;
      let packet;
      try {
        packet = JSON.parse(message);
      } catch {
        continue;
      }
      if (Array.isArray(packet)) packet.forEach(take);
      else take(packet);
    }
  })();

  return {
    /** Like socket.subscribe; the channel's position rides along on every resubscribe. */
    subscribe(channelName, options = {}) {
      let data = states.get(channelName);
      if (!data) {
        data = {};
        states.set(channelName, data);
      }
      return socket.subscribe(channelName, { ...options, data });
    },
    /** The channel's last position, or undefined before its first publication. */
    position(channelName) {
      const state = states.get(channelName);
      return state && state.recover ? structuredClone(state.recover) : undefined;
    },
    /** The nodes' answers to recovering subscriptions. */
    answers() {
      return socket.receiver('sockmesh:recovery');
    },
  };
}
