'use strict';
// A scripted WebSocket server for build/bin/ws-client (run by tests/test_ws_peers.c).
//
//   node ws_script_server.js MODE [N]
//
// Listens on 127.0.0.1 (a free port), prints "listening <port>", serves one connection,
// then prints "done" and exits 0 (1 after 20 s). The modes that speak WebSocket properly
// use the `ws` package; the ones that must misbehave write the bytes themselves.
//
//   echo K          (ws) after "hi": K round trips (a message, then its echo), then
//                   "close cmd"
//   send N          (ws) after "hi": N messages at once
//   server-close C  (ws) after "hi": "bye soon", and once it is back, a close with code C
//   refuse          answers the upgrade with 404
//   ok200           answers the upgrade with 200
//   bad-accept      answers 101 with a wrong Sec-WebSocket-Accept
//   reset           (raw) 101, "before reset", and once it is back, a TCP reset
//   eof             (raw) 101, "before eof", and once it is back, a FIN without a close frame
//   protocol-error  (raw) 101, "before error", and once it is back, a frame with RSV1 set
//                   (no extension was agreed: RFC 6455 §5.2)
//   silent          takes the TCP connection and never answers
//
// What it saw, one line each: "sent <JSON string>" for every text message it sent,
// "recv <JSON string>" for every text message it received ("recv-binary <length>" for
// binary), "closed <code> <JSON reason>" for the client's close frame, "closed none" when
// the TCP connection ended without one.
const crypto = require('crypto');
const http = require('http');
const WebSocket = require('ws');

const mode = process.argv[2] || 'echo';
const arg = Number(process.argv[3] || 0);
const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';

// Exits once everything printed is out: process.exit() alone drops what a pipe has not
// taken yet.
function finish(code) {
    process.stdout.write('done\n', () => process.exit(code));
}
setTimeout(() => {
    console.log('ws_script_server.js: timed out');
    finish(1);
}, 20000).unref();

// Messages of every kind a line-oriented client must pass through unchanged.
function message(i) {
    const pool = [
        'first',
        '',
        'two  spaces\tand a tab',
        'caf\u00e9 \u2713 \u{1F389}',
        'close cmd ',
        'Close cmd',
        'x'.repeat(70000) + '\u00e9'.repeat(20000),
        'hi',
        '  leading and trailing  ',
        '{"json": [1, 2, 3]}',
    ];
    return pool[i % pool.length];
}

function sent(text) {
    console.log('sent ' + JSON.stringify(text));
}

function acceptFor(req) {
    return crypto.createHash('sha1').update(req.headers['sec-websocket-key'] + GUID)
        .digest('base64');
}

// ---- the modes that speak WebSocket properly (`ws`) ----

function serveWs(ws) {
    let step = 0;
    let pending = null; // the message whose echo is awaited
    const next = () => {
        if (mode === 'echo') {
            if (step === arg) {
                sent('close cmd');
                ws.send('close cmd');
                return;
            }
            pending = message(step++);
            sent(pending);
            ws.send(pending);
        } else if (mode === 'send') {
            for (let i = 0; i < arg; i++) {
                const m = message(i);
                sent(m);
                ws.send(m);
            }
        } else if (mode === 'server-close') {
            if (step++ === 0) {
                pending = 'bye soon';
                sent(pending);
                ws.send(pending);
            } else {
                ws.close(arg, 'server closes');
            }
        }
    };
    let greeted = false;
    ws.on('message', (data, isBinary) => {
        if (isBinary) {
            console.log('recv-binary ' + data.length);
            return;
        }
        const text = data.toString();
        console.log('recv ' + JSON.stringify(text));
        if (!greeted) {
            greeted = text === 'hi';
            if (greeted) next();
            return;
        }
        if (pending !== null && text === pending) {
            pending = null;
            next();
        }
    });
    ws.on('close', (code, reason) => {
        // `ws` reports 1005 for a close frame without a code and 1006 for none at all
        console.log(code === 1006 ? 'closed none'
            : `closed ${code} ${JSON.stringify(reason.toString())}`);
        finish(0);
    });
    ws.on('error', (err) => console.log('error ' + err.message));
}

// ---- the modes that misbehave: frames by hand ----

function textFrame(text) {
    const payload = Buffer.from(text);
    if (payload.length > 125) throw new Error('short frames only');
    return Buffer.concat([Buffer.from([0x81, payload.length]), payload]);
}

// Reads the client's (masked) frames: texts and the close frame.
function frameReader(onText, onClose) {
    let buf = Buffer.alloc(0);
    return (chunk) => {
        buf = Buffer.concat([buf, chunk]);
        for (;;) {
            if (buf.length < 2) return;
            let len = buf[1] & 0x7f;
            let off = 2;
            if (len === 126) {
                if (buf.length < 4) return;
                len = buf.readUInt16BE(2);
                off = 4;
            } else if (len === 127) {
                if (buf.length < 10) return;
                len = Number(buf.readBigUInt64BE(2));
                off = 10;
            }
            const masked = (buf[1] & 0x80) !== 0;
            const mask = masked ? buf.subarray(off, off + 4) : null;
            if (masked) off += 4;
            if (buf.length < off + len) return;
            const payload = Buffer.from(buf.subarray(off, off + len));
            if (mask) for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i & 3];
            const opcode = buf[0] & 0x0f;
            buf = buf.subarray(off + len);
            if (opcode === 0x1) onText(payload.toString());
            else if (opcode === 0x8)
                onClose(payload.length >= 2 ? payload.readUInt16BE(0) : 1005,
                    payload.subarray(2).toString());
        }
    };
}

function serveRaw(req, socket) {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
        `Connection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(req)}\r\n\r\n`);
    const first = 'before ' + (mode === 'protocol-error' ? 'error' : mode);
    let closeSeen = false;
    let greeted = false;
    socket.on('data', frameReader((text) => {
        console.log('recv ' + JSON.stringify(text));
        if (!greeted) {
            greeted = true;
            sent(first);
            socket.write(textFrame(first));
            return;
        }
        if (text !== first) return;
        if (mode === 'reset') socket.resetAndDestroy();
        else if (mode === 'eof') socket.end();
        else socket.write(Buffer.from([0xc1, 0x02, 0x68, 0x69])); // RSV1 + text "hi"
    }, (code, reason) => {
        closeSeen = true;
        console.log(`closed ${code} ${JSON.stringify(reason)}`);
        socket.end();
    }));
    socket.on('error', () => {});
    socket.on('end', () => socket.end());
    socket.on('close', () => {
        if (!closeSeen) console.log('closed none');
        finish(0);
    });
}

// ---- the listener ----

const wss = new WebSocket.WebSocketServer({ noServer: true });
const server = http.createServer((req, res) => {
    res.writeHead(404);
    res.end();
});
server.on('upgrade', (req, socket, head) => {
    server.close(); // one connection
    if (mode === 'refuse' || mode === 'ok200') {
        const status = mode === 'refuse' ? '404 Not Found' : '200 OK';
        socket.end(`HTTP/1.1 ${status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno`);
        socket.on('close', () => finish(0));
    } else if (mode === 'bad-accept') {
        socket.end('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n' +
            'Connection: Upgrade\r\nSec-WebSocket-Accept: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
        socket.on('close', () => finish(0));
    } else if (mode === 'silent') {
        socket.on('error', () => {});
        socket.on('close', () => {
            console.log('closed none');
            finish(0);
        });
        socket.on('end', () => socket.end()); // an upgraded socket is half-open otherwise
        socket.resume(); // read (and drop) what comes, so that the client's FIN is seen
    } else if (mode === 'reset' || mode === 'eof' || mode === 'protocol-error') {
        serveRaw(req, socket);
    } else {
        wss.handleUpgrade(req, socket, head, serveWs);
    }
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
