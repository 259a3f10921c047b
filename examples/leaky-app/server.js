// A small HTTP service with a planted leak: every request to /work caches
// LEAK_PER_REQUEST LeakyThing objects in a module-level array that nothing ever clears.
// Prints "ready <port>" once listening (PORT=0 picks a free port).
'use strict';
const http = require('http');

class LeakyThing {
  constructor(requestId, index) {
    this.requestId = requestId;
    this.index = index;
    this.createdAt = Date.now();
    this.note = `request ${requestId} item ${index}`;
  }
}

const perRequest = Number(process.env.LEAK_PER_REQUEST || 500);
const cache = [];
let requests = 0;

const server = http.createServer((req, res) => {
  if (req.url === '/work') {
    requests += 1;
    for (let i = 0; i < perRequest; i++) cache.push(new LeakyThing(requests, i));
    res.end(JSON.stringify({ requests, cached: cache.length }));
    return;
  }
  res.end('ok\n');
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`ready ${server.address().port}`);
});
