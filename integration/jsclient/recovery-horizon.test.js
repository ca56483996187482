// The recovery helper's positions forget origins past their horizon (clients/js/sockmesh-recovery.js):
// fed #publish packets directly through a stand-in for socketcluster-client's socket, with
// publication times a week long, which no node could produce in a test's time.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { withRecovery } from '../../clients/js/sockmesh-recovery.js';

// fakeSocket is the part of an AGClientSocket the helper uses: the 'message' listener (an
// async iterable of {message}) and subscribe.
function fakeSocket() {
  const queue = [];
  let wake = null;
  return {
    send(packet) {
      queue.push({ message: JSON.stringify(packet) });
      if (wake) wake();
    },
    listener(name) {
      assert.equal(name, 'message');
      return (async function* () {
        for (;;) {
          while (queue.length) yield queue.shift();
          await new Promise((resolve) => (wake = resolve));
        }
      })();
    },
    subscribe(name, options) {
      return { name, options };
    },
  };
}

const drain = () => new Promise((resolve) => setImmediate(resolve));

// A publishing node restarted every 10 minutes for a week (1,008 origins of 5 publications
// each) beside a steady origin: the position keeps what was heard within the hour.
async function week(options) {
  const socket = fakeSocket();
  const rec = withRecovery(socket, options);
  const sub = rec.subscribe('ch');
  let steady = 0;
  for (let i = 0; i < 1008; i++) {
    for (let k = 0; k < 5; k++) {
      const at = i * 10 * 60 * 1000 + k * 1000;
      socket.send({ event: '#publish', data: { channel: 'ch', data: k, pos: [`pub~${i}`, k + 1, at] } });
      socket.send({ event: '#publish', data: { channel: 'ch', data: k, pos: ['steady', ++steady, at + 500] } });
    }
    if (i % 64 === 0) await drain();
  }
  await drain();
  return { rec, sub };
}

test('a position forgets origins heard nothing from for an hour when another appears', async () => {
  const { rec, sub } = await week();
  const pos = rec.position('ch');
  assert.deepEqual(
    Object.keys(pos.seqs).sort(),
    ['pub~1001', 'pub~1002', 'pub~1003', 'pub~1004', 'pub~1005', 'pub~1006', 'pub~1007', 'steady'],
  );
  assert.equal(pos.seqs.steady, 5040);
  assert.equal(pos.time, 1007 * 600000 + 4500);
  // What socketcluster-client sends on the next resubscribe is the same object.
  assert.deepEqual(sub.options.data.recover, pos);
  assert.ok(JSON.stringify(sub.options.data).length < 300);
});

test('horizon Infinity forgets nothing; the last origin always stays', async () => {
  const { rec } = await week({ horizon: Infinity });
  assert.equal(Object.keys(rec.position('ch').seqs).length, 1009);

  const socket = fakeSocket();
  const short = withRecovery(socket, { horizon: 1000 });
  short.subscribe('ch');
  const pub = (origin, seq, at) => socket.send({ event: '#publish', data: { channel: 'ch', data: 0, pos: [origin, seq, at] } });
  pub('a', 1, 0);
  pub('b', 1, 10000);
  pub('a', 2, 10500); // heard again: kept past b's appearance
  pub('c', 1, 11000);
  await drain();
  assert.deepEqual(short.position('ch').seqs, { a: 2, b: 1, c: 1 });
  pub('d', 1, 60000);
  await drain();
  assert.deepEqual(short.position('ch'), { seqs: { d: 1 }, time: 60000 });
});
