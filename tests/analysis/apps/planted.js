// One process, three snapshots (ids stay comparable), with each heuristic's problem planted:
// - globalThis.myLeakyCache: a Map grown by 100 entries (string key, object value) before
//   each snapshot: 100, 200, 300 entries;
// - globalThis.steadyMap: a Map of 50 entries whose values are replaced (never grows);
// - globalThis.onceMap: a Map that grows 10, 20, 20 (grew once, not every time);
// - globalThis.growingQueue: an Array of objects, 10, 20, 30 elements;
// - globalThis.objectCache: a plain object, 5, 10, 15 properties holding objects;
// - globalThis.dupStrings: DUP_COUNT separate copies of one 64-character string;
// - globalThis.fanOut: a FanOutHolder with FAN_OUT properties, each a distinct object.
// Usage: node planted.js OUT_DIR DUP_COUNT FAN_OUT
'use strict';
const v8 = require('v8');
const path = require('path');

const [outDir, dupArg, fanArg] = process.argv.slice(2);

class CacheEntry {
  constructor(i) {
    this.index = i;
  }
}
class FanOutHolder {}

globalThis.myLeakyCache = new Map();
globalThis.steadyMap = new Map();
globalThis.onceMap = new Map();
globalThis.growingQueue = [];
globalThis.objectCache = {};
// Only the copies stay: the bytes they are decoded from are no string.
const bytes = Buffer.from('duplicated-string-' + 'x'.repeat(46));
globalThis.dupStrings = Array.from({ length: Number(dupArg) }, () => bytes.toString('latin1'));
globalThis.fanOut = new FanOutHolder();
for (let i = 0; i < Number(fanArg); i++) globalThis.fanOut['ref' + i] = new CacheEntry(i);
for (let i = 0; i < 50; i++) globalThis.steadyMap.set('steady:' + i, new CacheEntry(i));

let next = 0;
for (let round = 1; round <= 3; round++) {
  for (let i = 0; i < 100; i++, next++) globalThis.myLeakyCache.set('user:' + next, new CacheEntry(next));
  for (let i = 0; i < 50; i++) globalThis.steadyMap.set('steady:' + i, new CacheEntry(round));
  if (round <= 2) for (let i = 0; i < 10; i++) globalThis.onceMap.set('once:' + round + ':' + i, new CacheEntry(i));
  for (let i = 0; i < 10; i++) globalThis.growingQueue.push(new CacheEntry(i));
  for (let i = 0; i < 5; i++) globalThis.objectCache['k' + round + '_' + i] = new CacheEntry(i);
  v8.writeHeapSnapshot(path.join(outDir, `s${round}.heapsnapshot`));
}
