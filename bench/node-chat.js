'use strict';
// node-chat — a small Node.js chat server with build/bin/chat's HTTP surface, the peer
// that scripts/bench-hub.sh measures squall's hub against (docs/hub.md). Node's http
// module and the npm `ws` package of tests/peers; rooms in memory, each with its own ids
// (+1 per message) and a bounded history. It is written the way a Node programmer would
// write it, no more: one JSON encoding per message, ws.send to each subscriber.
//
//   node bench/node-chat.js [--host 127.0.0.1] [--port 8000] [--history 1000] [--page FILE]
//
//   POST /rooms/R/messages {"text": "..."}  -> 201 {"id": N}; a bad body -> 422
//   GET  /rooms/R/messages?since=N[&wait=S] -> JSON array (poll; long poll with wait)
//   GET  /rooms/R/events                    -> text/event-stream (Last-Event-ID / since)
//   WS   /ws?room=R[&since=N]                -> one text frame per message; frames sent
//                                              are published
//   GET  /                                  -> FILE (a chat page), when --page is given
//
// Prints "node-chat: serving on http://HOST:PORT/" once it listens (--port 0: a free
// port). Errors: one line on stderr, exit 2.
const http = require('http');
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const peers = createRequire(path.join(__dirname, '..', 'tests', 'peers', 'package.json'));
const { WebSocketServer } = peers('ws');

const MAX_BODY = 1 << 20;
const MAX_TEXT = 64 << 10;
const MAX_WAIT_S = 60;
const HEARTBEAT_MS = 15000;

function fail(msg) {
    process.stderr.write(`node-chat: ${msg}\n`);
    process.exit(2);
}

const opts = { host: '127.0.0.1', port: 8000, history: 1000, page: null };
for (let i = 2; i < process.argv.length; i++) {
    const a = process.argv[i];
    const v = process.argv[i + 1];
    if (a === '--host' && v !== undefined) opts.host = v;
    else if (a === '--port' && /^\d+$/.test(v || '')) opts.port = Number(v);
    else if (a === '--history' && /^\d+$/.test(v || '')) opts.history = Number(v);
    else if (a === '--page' && v !== undefined) opts.page = v;
    else fail(`bad argument '${a}' (usage: node-chat.js [--host H] [--port P] [--history N] [--page FILE])`);
    i++;
}
let page = null;
if (opts.page !== null) {
    try {
        page = fs.readFileSync(opts.page);
    } catch (e) {
        fail(`${opts.page}: ${e.message}`);
    }
}

// name -> { last, history: [{id, json}], ws: Set, polls: Set, sse: Set }
const rooms = new Map();

function getRoom(name) {
    let r = rooms.get(name);
    if (r === undefined) {
        r = { last: 0, history: [], ws: new Set(), polls: new Set(), sse: new Set() };
        rooms.set(name, r);
    }
    return r;
}

function publish(name, text) {
    const r = getRoom(name);
    const id = ++r.last;
    const json = JSON.stringify({ id, room: name, text });
    r.history.push({ id, json });
    if (r.history.length > opts.history) r.history.shift();
    for (const ws of r.ws) ws.send(json);
    if (r.polls.size > 0) {
        const body = `[${json}]`;
        for (const p of r.polls) answerPoll(p, body);
        r.polls.clear();
    }
    for (const res of r.sse) res.write(`id: ${id}\ndata: ${json}\n\n`);
    return id;
}

// The messages of r above since, with what the client missed: { list, missed, reset }.
function above(r, since) {
    let reset = false;
    if (since > r.last) {
        since = 0;
        reset = true;
    }
    const first = r.history.length > 0 ? r.history[0].id : r.last + 1;
    const missed = since + 1 < first ? first - since - 1 : 0;
    return { list: r.history.filter((m) => m.id > since), missed, reset };
}

function send(res, status, obj, extra) {
    const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
    res.writeHead(status, {
        'Content-Type': 'application/json',
        'Content-Length': Buffer.byteLength(body),
        ...extra,
    });
    res.end(body);
}

function unprocessable(res, type, loc, msg, input) {
    send(res, 422, { detail: [{ type, loc, msg, input }] });
}

function answerPoll(p, body) {
    clearTimeout(p.timer);
    send(p.res, 200, body);
}

// since= and Last-Event-ID: decimal digits that fit in 63 bits; '' or absent: 0.
function parseSince(s) {
    if (s === null || s === '') return 0;
    if (!/^\d{1,19}$/.test(s)) return -1;
    const n = Number(s);
    return Number.isSafeInteger(n) ? n : -1;
}

function decodeRoom(s) {
    try {
        const name = decodeURIComponent(s);
        return name.length > 0 && Buffer.byteLength(name) <= 128 ? name : null;
    } catch (e) {
        return null;
    }
}

function postMessage(req, res, name) {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
        size += c.length;
        if (size > MAX_BODY) {
            send(res, 413, { detail: 'body too large' }, { Connection: 'close' });
            req.destroy();
            return;
        }
        chunks.push(c);
    });
    req.on('end', () => {
        if (size > MAX_BODY) return;
        const raw = Buffer.concat(chunks).toString('utf8');
        let body;
        try {
            body = JSON.parse(raw);
        } catch (e) {
            return unprocessable(res, 'json_invalid', ['body', 0], 'JSON decode error', raw);
        }
        if (body === null || typeof body !== 'object' || Array.isArray(body))
            return unprocessable(res, 'model_attributes_type', ['body'],
                'Input should be a valid dictionary', body);
        if (!('text' in body))
            return unprocessable(res, 'missing', ['body', 'text'], 'Field required', body);
        if (typeof body.text !== 'string')
            return unprocessable(res, 'string_type', ['body', 'text'],
                'Input should be a valid string', body.text);
        if (Buffer.byteLength(body.text) > MAX_TEXT)
            return unprocessable(res, 'string_too_long', ['body', 'text'],
                'String should have at most 65536 bytes', '...');
        send(res, 201, { id: publish(name, body.text) });
    });
}

function getMessages(req, res, name, url) {
    const since = parseSince(url.searchParams.get('since'));
    if (since < 0) return unprocessable(res, 'int_parsing', ['query', 'since'],
        'Input should be a valid integer', url.searchParams.get('since'));
    const w = url.searchParams.get('wait');
    if (w !== null && !/^\d{1,9}$/.test(w)) return unprocessable(res, 'int_parsing',
        ['query', 'wait'], 'Input should be a valid integer', w);
    const wait = Math.min(Number(w || 0), MAX_WAIT_S);
    const r = getRoom(name);
    const { list, missed, reset } = above(r, since);
    const extra = {};
    if (missed > 0) extra['X-Hub-Missed'] = String(missed);
    if (reset) extra['X-Hub-Reset'] = '1';
    if (list.length > 0 || wait === 0)
        return send(res, 200, `[${list.map((m) => m.json).join(',')}]`, extra);
    const p = { res, timer: null };
    p.timer = setTimeout(() => {
        r.polls.delete(p);
        send(res, 200, '[]', extra);
    }, wait * 1000);
    r.polls.add(p);
    res.on('close', () => {
        if (r.polls.delete(p)) clearTimeout(p.timer);
    });
}

function getEvents(req, res, name, url) {
    let since = parseSince(req.headers['last-event-id'] ?? url.searchParams.get('since'));
    if (since < 0) since = 0;
    const r = getRoom(name);
    res.writeHead(200, {
        'Content-Type': 'text/event-stream',
        'Cache-Control': 'no-cache',
    });
    res.flushHeaders(); // the head goes out at once, as squall's does
    for (const m of above(r, since).list) res.write(`id: ${m.id}\ndata: ${m.json}\n\n`);
    const beat = setInterval(() => res.write(':\n\n'), HEARTBEAT_MS);
    r.sse.add(res);
    res.on('close', () => {
        clearInterval(beat);
        r.sse.delete(res);
    });
}

const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const m = /^\/rooms\/([^/]+)\/(messages|events)$/.exec(url.pathname);
    if (m !== null) {
        const name = decodeRoom(m[1]);
        if (name === null) return unprocessable(res, 'value_error', ['path', 'room'],
            'Invalid room name', m[1]);
        if (m[2] === 'messages' && req.method === 'POST') return postMessage(req, res, name);
        if (m[2] === 'messages' && req.method === 'GET') return getMessages(req, res, name, url);
        if (m[2] === 'events' && req.method === 'GET') return getEvents(req, res, name, url);
        return send(res, 405, { detail: 'Method Not Allowed' });
    }
    if (url.pathname === '/' && page !== null && req.method === 'GET') {
        res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8',
            'Content-Length': page.length });
        return res.end(page);
    }
    send(res, 404, { detail: 'Not Found' });
});

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_BODY });
server.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url, 'http://x');
    const name = url.pathname === '/ws' ? decodeRoom(url.searchParams.get('room') || '') : null;
    const since = parseSince(url.searchParams.get('since'));
    if (name === null || since < 0) {
        socket.end('HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
        return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
        const r = getRoom(name);
        for (const msg of above(r, since).list) ws.send(msg.json);
        r.ws.add(ws);
        ws.on('message', (data, isBinary) => {
            if (isBinary) ws.close(1003, 'text frames only');
            else publish(name, data.toString());
        });
        ws.on('close', () => r.ws.delete(ws));
        ws.on('error', () => r.ws.delete(ws));
    });
});

server.on('error', (e) => fail(e.message));
server.listen(opts.port, opts.host, () => {
    const a = server.address();
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    console.log(`node-chat: serving on http://${host}:${a.port}/`);
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => process.exit(0));
