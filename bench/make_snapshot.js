// Writes a heap snapshot of COUNT small objects held by one array.
// Usage: node --max-old-space-size=MB make_snapshot.js COUNT OUT_FILE
'use strict';
const v8 = require('v8');

class Small {
  constructor(i) {
    this.i = i;
  }
}
const count = Number(process.argv[2]);
const keep = new Array(count);
for (let i = 0; i < count; i++) keep[i] = new Small(i);
globalThis.keep = keep;
v8.writeHeapSnapshot(process.argv[3]);
