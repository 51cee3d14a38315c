import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Rng } from '../../native-runner/util/rng';

test('PCG32 matches the reference sequence for seed 42, stream 54', () => {
  // pcg32-global demo: pcg32_srandom_r(&rng, 42u, 54u) then pcg32_random_r x6.
  const r = new Rng(42, 54);
  const got = Array.from({ length: 6 }, () => r.nextU32().toString(16));
  assert.deepEqual(got, ['a15c02b7', '7b47f409', 'ba1d3330', '83d2f293', 'bfa4784b', 'cbed606e']);
});

test('state round-trips exactly and shuffles are permutations', () => {
  const a = new Rng(7);
  a.nextU32();
  const b = Rng.fromState(a.getState());
  assert.equal(a.nextFloat(), b.nextFloat());
  const p = new Rng(1).permutation(100);
  assert.deepEqual([...p].sort((x, y) => x - y), Array.from({ length: 100 }, (_, i) => i));
  assert.notDeepEqual(p, Array.from({ length: 100 }, (_, i) => i));
});

test('nextInt rejects bad bounds and stays in range', () => {
  const r = new Rng(3);
  assert.throws(() => r.nextInt(0));
  for (let i = 0; i < 1000; i++) {
    const x = r.nextInt(7);
    assert.ok(x >= 0 && x < 7);
  }
});
