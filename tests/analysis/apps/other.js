// Another program: its own classes and script, one snapshot. Usage: node other.js OUT_FILE
'use strict';
const v8 = require('v8');

class Invoice {
  constructor(n) {
    this.number = n;
  }
}
globalThis.invoices = Array.from({ length: 200 }, (_, n) => new Invoice(n));
v8.writeHeapSnapshot(process.argv[2]);
