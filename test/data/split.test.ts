// The train/eval split reproduces HF datasets' train_test_split, i.e. numpy default_rng(seed).permutation.
// Reference numbers are numpy's published outputs for seed 42 and 0.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NumpyPcg64, splitSizes, splitTrainEval } from '../../native-runner/data/split';

test('PCG64 seeded through SeedSequence gives numpy default_rng doubles', () => {
  const g = new NumpyPcg64(42);
  assert.deepEqual([g.nextDouble(), g.nextDouble(), g.nextDouble()], [0.7739560485559633, 0.4388784397520523, 0.8585979199113825]);
  assert.equal(new NumpyPcg64(0).nextDouble(), 0.6369616873214543);
});

test('permutation equals numpy default_rng(42).permutation(n) for n = 10 and 20', () => {
  assert.deepEqual(new NumpyPcg64(42).permutation(10), [5, 6, 0, 7, 3, 2, 4, 9, 1, 8]);
  assert.deepEqual(new NumpyPcg64(42).permutation(20), [15, 9, 14, 7, 12, 10, 6, 19, 3, 0, 16, 5, 11, 18, 2, 4, 17, 1, 13, 8]);
});

test('split sizes follow HF: ceil for test, floor for train; counts; errors name test_size', () => {
  assert.deepEqual(splitSizes(15011, 0.05), { nTest: 751, nTrain: 14260 }); // Dolly 15k: 14260 / 751
  assert.deepEqual(splitSizes(20, 0.05), { nTest: 1, nTrain: 19 });
  assert.deepEqual(splitSizes(20, 3), { nTest: 3, nTrain: 17 });
  assert.throws(() => splitSizes(3, 3), /test_size: leaves no training examples/);
  assert.throws(() => splitSizes(10, 2.5), /test_size: a count must be an integer/);
  assert.throws(() => splitSizes(10, -1), /test_size/);
});

test('splitTrainEval: test is the first n_test of the permutation, train the rest, in permutation order', () => {
  const items = Array.from({ length: 20 }, (_, i) => `item${i}`);
  const { train, test: ev } = splitTrainEval(items, 0.2, 42);
  assert.deepEqual(ev, ['item15', 'item9', 'item14', 'item7']);
  assert.equal(train.length, 16);
  assert.equal(train[0], 'item12');
  assert.deepEqual([...train, ...ev].sort(), [...items].sort());
  assert.deepEqual(splitTrainEval(items, 0.2, 42), { train, test: ev });
  assert.notDeepEqual(splitTrainEval(items, 0.2, 7).test, ev);
  assert.deepEqual(splitTrainEval(items, 0, 42), { train: items, test: [] });
});
