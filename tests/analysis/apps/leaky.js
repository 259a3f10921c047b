// Writes three snapshots of one process (ids stay comparable): baseline, target, final.
// Between baseline and target it plants LEAK_COUNT LeakyThing objects held by
// globalThis.leakRegistry.items, plus as many TransientThing objects that are dropped
// before final. Usage: node leaky.js OUT_DIR LEAK_COUNT
'use strict';
const v8 = require('v8');
const path = require('path');

const [outDir, countArg] = process.argv.slice(2);
const count = Number(countArg);

class LeakyThing {
  constructor(i) {
    this.index = i;
    this.payload = new Array(4).fill(i);
  }
}
class TransientThing {
  constructor(i) {
    this.index = i;
  }
}

const registry = { items: [] };
globalThis.leakRegistry = registry;
let transient = [];

function snap(name) {
  const file = path.join(outDir, `${name}.heapsnapshot`);
  v8.writeHeapSnapshot(file);
  process.stdout.write(file + '\n');
}

process.stdout; // created now so that it is not among the objects allocated later
snap('baseline');
for (let i = 0; i < count; i++) {
  registry.items.push(new LeakyThing(i));
  transient.push(new TransientThing(i));
}
snap('target');
transient = null;
snap('final');
