'use strict';
// A Node `ws` client against a squall server (run by tests/test_ws_peers.c).
//
//   node ws_client.js PORT MODE
//
// MODE echo:       /echo: text and binary of every size, whole and fragmented (also split
//                  inside a UTF-8 character), a clean close from this side (1000); then
//                  /closer: "close, please" makes the server close with 4001 "server bye".
// MODE hello-echo: hello's /ws/echo: the same echoes and the close from this side.
// MODE hello-said: hello's /ws: "hi" is answered "Message text was: hi".
//
// Prints "ok" and exits 0 when everything matched; otherwise says what differed, exits 1.
const WebSocket = require('ws');

const port = Number(process.argv[2]);
const mode = process.argv[3] || 'echo';
const sizes = [0, 125, 126, 65535, 65536, 1 << 20];

function fail(msg) {
    console.log('ws_client.js: ' + msg);
    process.exit(1);
}
setTimeout(() => fail('timed out'), 25000).unref();

function pattern(i, len, binary) {
    const b = Buffer.alloc(len);
    for (let k = 0; k < len; k++)
        b[k] = binary ? (k * 7 + i) & 0xff : 0x61 + ((k + i) % 26);
    return b;
}

// Opens a connection; next() resolves with the next message, closed with the close event.
function connect(path) {
    return new Promise((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`);
        const queue = [];
        const waiting = [];
        ws.on('message', (data, isBinary) => {
            const m = { data, isBinary };
            if (waiting.length) waiting.shift()(m);
            else queue.push(m);
        });
        const closed = new Promise((res) => ws.on('close', (code, reason) =>
            res({ code, reason: reason.toString() })));
        ws.on('error', (err) => fail(`${path}: ${err.message}`));
        ws.once('open', () => resolve({
            ws,
            closed,
            next: () => (queue.length ? Promise.resolve(queue.shift())
                                      : new Promise((res) => waiting.push(res))),
        }));
    });
}

function same(what, m, want, binary) {
    if (m.isBinary !== binary) fail(`${what}: binary ${m.isBinary}, expected ${binary}`);
    if (!Buffer.from(m.data).equals(want))
        fail(`${what}: ${m.data.length} bytes back, ${want.length} sent, or different bytes`);
}

async function echoes(c) {
    let i = 0;
    for (const binary of [false, true]) {
        for (const n of sizes) {
            const msg = pattern(i++, n, binary);
            c.ws.send(binary ? msg : msg.toString('latin1'), { binary });
            same(`whole ${binary ? 'binary' : 'text'} of ${n}`, await c.next(), msg, binary);
        }
    }
    // fragmented: three frames per message (a continuation carries the rest)
    for (const binary of [false, true]) {
        for (const n of [3, 126, 65536, 1 << 20]) {
            const msg = pattern(i++, n, binary);
            const a = Math.floor(n / 3), b = Math.floor((2 * n) / 3);
            c.ws.send(msg.subarray(0, a), { binary, fin: false });
            c.ws.send(msg.subarray(a, b), { binary, fin: false });
            c.ws.send(msg.subarray(b), { binary, fin: true });
            same(`fragmented ${binary ? 'binary' : 'text'} of ${n}`, await c.next(), msg, binary);
        }
    }
    // text fragments that split UTF-8 characters: checked across fragments, not per frame
    const text = Buffer.from('h\u00e9llo \u20acuro \u{1F600}!', 'utf8');
    c.ws.send(text.subarray(0, 2), { binary: false, fin: false });    // ends inside é
    c.ws.send(text.subarray(2, 9), { binary: false, fin: false });    // ends inside €
    c.ws.send(text.subarray(9, 16), { binary: false, fin: false });   // ends inside 😀
    c.ws.send(text.subarray(16), { binary: false, fin: true });
    same('text split inside characters', await c.next(), text, false);
}

async function closeFromHere(c) {
    c.ws.close(1000, 'node done');
    const { code, reason } = await c.closed;
    if (code !== 1000 || reason !== 'node done')
        fail(`close from the client: got ${code} "${reason}", expected 1000 "node done"`);
}

async function main() {
    if (mode === 'echo' || mode === 'hello-echo') {
        const c = await connect(mode === 'echo' ? '/echo' : '/ws/echo');
        await echoes(c);
        await closeFromHere(c);
    }
    if (mode === 'echo') {
        const c = await connect('/closer');
        c.ws.send('close, please');
        const { code, reason } = await c.closed;
        if (code !== 4001 || reason !== 'server bye')
            fail(`close from the server: got ${code} "${reason}", expected 4001 "server bye"`);
    }
    if (mode === 'hello-said') {
        const c = await connect('/ws');
        c.ws.send('hi');
        same('/ws', await c.next(), Buffer.from('Message text was: hi'), false);
        await closeFromHere(c);
    }
    console.log('ok');
    process.exit(0);
}

main().catch((err) => fail(err.stack || String(err)));
