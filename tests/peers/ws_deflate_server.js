'use strict';
// A Node `ws` echo server with perMessageDeflate, for squall's client (run by
// tests/test_ws_deflate.c).
//
//   node ws_deflate_server.js TAKEOVER
//
// Listens on 127.0.0.1, any free port, and prints "listening <port>". TAKEOVER 0 asks
// for no context takeover on both sides. Echoes every message as it came (compressed:
// threshold 0), prints "ext <the agreed extension>" and "closed <code>" for its one
// connection, then exits 0 (1 on a timeout).
const WebSocket = require('ws');

const takeover = process.argv[2] === '1';
setTimeout(() => {
    console.log('ws_deflate_server.js: timed out');
    process.exit(1);
}, 25000).unref();

const wss = new WebSocket.WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 64 << 20,
    perMessageDeflate: {
        threshold: 0,
        serverNoContextTakeover: !takeover,
        clientNoContextTakeover: !takeover,
    },
});
wss.on('listening', () => console.log(`listening ${wss.address().port}`));
wss.on('headers', (headers) => {
    const ext = headers.find((h) => h.toLowerCase().startsWith('sec-websocket-extensions'));
    console.log(`ext ${ext ? ext.split(': ')[1] : 'none'}`);
});
wss.on('connection', (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    ws.on('close', (code) => {
        console.log(`closed ${code}`);
        wss.close(() => process.exit(0));
    });
    ws.on('error', (err) => console.log(`error ${err.message}`));
});
