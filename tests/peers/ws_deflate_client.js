'use strict';
// A Node `ws` client with perMessageDeflate against a squall route that takes it (run by
// tests/test_ws_deflate.c).
//
//   node ws_deflate_client.js PORT PATH TAKEOVER
//
// TAKEOVER 1: context takeover; 0: server_no_context_takeover and
// client_no_context_takeover. Every message is compressed (threshold 0). Checks the
// agreed extension, echoes text and binary, small and 1 MiB, whole and fragmented, and
// closes with 1000. Prints "ok" and exits 0, or says what differed and exits 1.
const WebSocket = require('ws');

const [port, path, takeover] = [Number(process.argv[2]), process.argv[3], process.argv[4] === '1'];

function fail(msg) {
    console.log('ws_deflate_client.js: ' + msg);
    process.exit(1);
}
setTimeout(() => fail('timed out'), 25000).unref();

function pattern(i, len, binary) {
    const b = Buffer.alloc(len);
    for (let k = 0; k < len; k++)
        b[k] = binary ? ((k >> 3) * 13 + i) & 0xff : (k % 50 ? 0x61 + (k % 7) : 0x41 + ((k / 50 + i) % 26));
    return b;
}

const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`, {
    perMessageDeflate: {
        threshold: 0,
        serverNoContextTakeover: !takeover,
        clientNoContextTakeover: !takeover,
    },
    maxPayload: 64 << 20,
});
const queue = [];
const waiting = [];
ws.on('message', (data, isBinary) => {
    const m = { data, isBinary };
    if (waiting.length) waiting.shift()(m);
    else queue.push(m);
});
const next = () => (queue.length ? Promise.resolve(queue.shift()) : new Promise((r) => waiting.push(r)));
let agreed = '';
ws.on('upgrade', (res) => { agreed = res.headers['sec-websocket-extensions'] || ''; });
ws.on('error', (err) => fail(err.message));
ws.on('open', async () => {
    if (!agreed.startsWith('permessage-deflate')) fail(`no permessage-deflate: '${agreed}'`);
    if (!takeover && !agreed.includes('server_no_context_takeover')) fail(`no takeover off: '${agreed}'`);
    let i = 0;
    for (const binary of [false, true]) {
        for (const n of [0, 1, 100, 5000, 1 << 20]) {
            const msg = pattern(i++, n, binary);
            ws.send(binary ? msg : msg.toString(), { binary });
            const got = await next();
            if (got.isBinary !== binary || Buffer.compare(got.data, msg) !== 0)
                fail(`whole ${binary ? 'binary' : 'text'} of ${n}: ${got.data.length} back`);
        }
        for (const n of [300, 1 << 20]) {
            const msg = pattern(i++, n, binary);
            const step = Math.max(1, Math.floor(n / 4));
            for (let k = 0; k < n; k += step)
                ws.send(msg.subarray(k, k + step), { binary, fin: k + step >= n });
            const got = await next();
            if (got.isBinary !== binary || Buffer.compare(got.data, msg) !== 0)
                fail(`fragmented ${binary ? 'binary' : 'text'} of ${n}: ${got.data.length} back`);
        }
    }
    ws.close(1000, 'node done');
});
ws.on('close', (code) => {
    if (code !== 1000) fail(`closed with ${code}`);
    console.log('ok');
    process.exit(0);
});
