// Prints memlab's retained size and immediate dominator of chosen objects as JSON.
// Usage: node memlab_retained.js MEMLAB_DIR SNAPSHOT ID...   (ID "all": every node)
'use strict';
const path = require('path');
const [memlabDir, file, ...ids] = process.argv.slice(2);
const modules = path.join(memlabDir, 'node_modules');
const { getFullHeapFromFile } = require(path.join(modules, '@memlab/heap-analysis'));
const { config } = require(path.join(modules, '@memlab/core'));
config.muteConsole = true;

(async () => {
  const heap = await getFullHeapFromFile(file);
  const out = {};
  const report = (node) => {
    out[node.id] = { retained: node.retainedSize, dominator: node.dominatorNode ? node.dominatorNode.id : null };
  };
  if (ids.length === 1 && ids[0] === 'all') {
    heap.nodes.forEach(report);
  } else {
    for (const id of ids) {
      const node = heap.getNodeById(Number(id));
      if (node) report(node);
    }
  }
  process.stdout.write(JSON.stringify(out));
})().catch((error) => {
  process.stderr.write(String(error.stack || error) + '\n');
  process.exit(1);
});
