// A Node.js `http` server answering GET /plaintext with "Hello, world", the peer
// scripts/bench-peers.sh measures hello against. One process, no cluster.
// usage: node bench/peers/node_http.js PORT
const http = require('http');
const port = parseInt(process.argv[2] || '8003', 10);
const body = Buffer.from('Hello, world');
const server = http.createServer((req, res) => {
  if (req.url === '/plaintext') {
    res.writeHead(200, { 'Content-Type': 'text/plain', 'Content-Length': body.length });
    res.end(body);
  } else {
    res.writeHead(404, { 'Content-Length': 0 });
    res.end();
  }
});
// Idle keep-alive connections are held for the memory row: keep them two minutes.
server.keepAliveTimeout = 120000;
server.headersTimeout = 121000;
server.listen(port, '127.0.0.1', 1024, () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
