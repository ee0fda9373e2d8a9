// A Node `ws` echo server, the peer squall's WebSocket echo is measured against.
// usage: node bench/ws-echo-node.js PORT   (NODE_PATH must find the `ws` package)
const { WebSocketServer } = require('ws');
const port = parseInt(process.argv[2] || '8002', 10);
const wss = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log(`listening ${port}`));
process.on('SIGTERM', () => process.exit(0));
