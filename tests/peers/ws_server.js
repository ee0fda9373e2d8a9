'use strict';
// A Node `ws` echo server for squall's client (run by tests/test_ws_peers.c).
//
//   node ws_server.js PORT CONNECTIONS
//
// Listens on 127.0.0.1:PORT (0: any free port) and prints "listening <port>". Echoes text
// and binary messages as they came; "close, please" is answered by a close with 4001
// "node bye". Prints "closed <code> <reason>" for each connection that ends, and exits 0
// once CONNECTIONS have ended (1 on a timeout).
const WebSocket = require('ws');

const port = Number(process.argv[2] || 0);
const expected = Number(process.argv[3] || 1);
let ended = 0;

setTimeout(() => {
    console.log('ws_server.js: timed out');
    process.exit(1);
}, 25000).unref();

const wss = new WebSocket.WebSocketServer({ host: '127.0.0.1', port, maxPayload: 64 << 20 });
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => {
        if (!isBinary && data.toString() === 'close, please') {
            ws.close(4001, 'node bye');
            return;
        }
        ws.send(data, { binary: isBinary });
    });
    ws.on('close', (code, reason) => {
        console.log(`closed ${code} ${reason.toString()}`);
        if (++ended === expected) wss.close(() => process.exit(0));
    });
    ws.on('error', (err) => console.log(`error ${err.message}`));
});
