// A snapshot heavy in what bench/heuristics.py measures: 1.4 M Maps, Sets, Arrays and
// Objects and 300,000 strings (two thirds of them one duplicated value), ~200 MiB.
// Usage: node --max-old-space-size=8000 make_collections.js OUT_FILE
'use strict';
const v8 = require('v8');
const bytes = Buffer.from('a repeated string value, decoded many times');
globalThis.strings = Array.from({ length: 300000 }, (_, i) => i % 3 ? bytes.toString('latin1') : 'u' + i);
globalThis.objects = Array.from({ length: 300000 }, (_, i) => ({ a: 'x' + i, b: {}, c: [i + 0.5], d: null }));
globalThis.maps = Array.from({ length: 100000 }, (_, i) => new Map([['k' + i, {}], ['j', 'v' + i], [i, {}]]));
globalThis.sets = Array.from({ length: 100000 }, (_, i) => new Set(['s' + i, {}, i]));
v8.writeHeapSnapshot(process.argv[2]);
