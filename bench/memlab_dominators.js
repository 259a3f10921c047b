// memlab's parse plus dominators and retained sizes (what heapsnap's bench measures).
// Usage: node --max-old-space-size=MB memlab_dominators.js MEMLAB_DIR SNAPSHOT
'use strict';
const path = require('path');
const [memlabDir, file] = process.argv.slice(2);
const core = require(path.join(memlabDir, 'node_modules', '@memlab', 'core'));
core.config.muteConsole = true;

(async () => {
  const started = process.hrtime.bigint();
  const snapshot = await core.utils.getSnapshotFromFile(file, { buildNodeIdIndex: true });
  const parsed = process.hrtime.bigint();
  new core.TraceFinder().calculateAllNodesRetainedSizes(snapshot);
  const done = process.hrtime.bigint();
  let root = 0;
  snapshot.nodes.forEach((node) => {
    if (node.nodeIndex === 0) root = node.retainedSize;
  });
  process.stdout.write(JSON.stringify({
    nodes: snapshot.nodes.length,
    parse: Number(parsed - started) / 1e9,
    dominators: Number(done - parsed) / 1e9,
    rootRetained: root,
  }) + '\n');
})().catch((error) => {
  process.stderr.write(String(error.stack || error) + '\n');
  process.exit(1);
});
