// chat.mjs — the chat page in a real browser (Debian's chromium, headless, driven by npm's
// playwright-core from tests/peers), against a running chat server.
//
//   node tests/browser/chat.mjs http://127.0.0.1:PORT/
//
// Two pages of one new room, each in its own browser context: A on ?transport=ws, B on
// ?transport=longpoll. Each waits for its #status to say "live: ws" / "live: longpoll",
// then sends a message (#text, #send); both messages must show on both pages, as
// li[data-id] in the same strictly increasing id order, each once. Then A is switched
// (#transport) to sse, and then to poll: after each switch one more message goes each way
// (A to B, B to A) and the lists are checked again. Screenshots of the two pages, taken
// once both first messages showed, go to $SQUALL_ARTIFACTS (build/artifacts when unset)
// as chat-ws.png and chat-longpoll.png (on a failure: the pages as they were then).
//
// Exits 0 when every check passed; otherwise 1 with one line on stderr saying why.
// Bounded: the whole run is cut at 50 s (CHAT_DEADLINE_MS), each wait at 10 s. Env:
// CHROMIUM (the browser, /usr/bin/chromium), SQUALL_ARTIFACTS.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const WAIT_MS = 10000;
const DEADLINE_MS = Number(process.env.CHAT_DEADLINE_MS || 50000);

let browser = null;
let home = null;
const pages = {}; // name -> page, for the screenshots
let shot = false;
const artifacts = path.resolve(process.env.SQUALL_ARTIFACTS || path.join(root, 'build', 'artifacts'));

function cleanupSync() {
    if (home !== null) fs.rmSync(home, { recursive: true, force: true });
    home = null;
}

async function screenshots() {
    fs.mkdirSync(artifacts, { recursive: true });
    for (const [name, page] of Object.entries(pages))
        await page.screenshot({ path: path.join(artifacts, `chat-${name}.png`), fullPage: true });
    shot = true;
}

async function die(reason) {
    const line = String(reason).split('\n')[0];
    process.stderr.write(`chat.mjs: ${line}\n`);
    if (!shot) {
        try {
            await Promise.race([screenshots(), new Promise((r) => setTimeout(r, 3000))]);
        } catch (e) {
            /* the failure is the reason given above */
        }
    }
    try {
        if (browser !== null) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 3000))]);
    } catch (e) {
        /* exiting anyway */
    }
    cleanupSync();
    process.exit(1);
}

const deadline = setTimeout(() => die(`timed out after ${DEADLINE_MS} ms`), DEADLINE_MS);
process.on('exit', cleanupSync);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => die(`killed by ${sig}`));

// Waits until the page's #status reads `want`.
async function waitStatus(name, page, want) {
    try {
        await page.waitForFunction(
            (w) => document.querySelector('#status')?.textContent.trim() === w, want,
            { timeout: WAIT_MS, polling: 50 });
    } catch (e) {
        const now = await page.$eval('#status', (el) => el.textContent.trim()).catch(() => '(no #status)');
        throw new Error(`${name}: #status is '${now}' after ${WAIT_MS} ms, expected '${want}'`);
    }
}

// The page's messages: [{id, text}] in document order.
function items(page) {
    return page.$$eval('#messages li[data-id]', (lis) =>
        lis.map((li) => ({ id: li.getAttribute('data-id'), text: li.textContent.trim() })));
}

async function send(name, page, text) {
    try {
        await page.fill('#text', text);
        await page.click('#send');
    } catch (e) {
        throw new Error(`${name}: sending '${text}': ${String(e.message).split('\n')[0]}`);
    }
}

// Waits until every page shows every text of `texts`, then checks that the pages agree:
// the same items, ids decimal and strictly increasing, each text once.
async function expectAll(texts) {
    const start = Date.now();
    for (const [name, page] of Object.entries(pages)) {
        const left = Math.max(WAIT_MS - (Date.now() - start), 1);
        try {
            await page.waitForFunction(
                (want) => {
                    const got = new Set([...document.querySelectorAll('#messages li[data-id]')]
                        .map((li) => li.textContent.trim()));
                    return want.every((t) => got.has(t));
                }, texts, { timeout: left, polling: 50 });
        } catch (e) {
            const got = (await items(page)).map((m) => `${m.id}:${m.text}`).join(', ');
            throw new Error(`${name}: not every message showed within ${WAIT_MS} ms: [${got}], ` +
                `expected ${JSON.stringify(texts)}`);
        }
    }
    const lists = {};
    for (const [name, page] of Object.entries(pages)) {
        const list = await items(page);
        let prev = -1;
        const seen = new Set();
        for (const m of list) {
            if (!/^[0-9]+$/.test(m.id)) throw new Error(`${name}: data-id '${m.id}' is not a number`);
            const id = Number(m.id);
            if (id <= prev) throw new Error(`${name}: ids not strictly increasing: ${prev} then ${id}`);
            if (seen.has(m.text)) throw new Error(`${name}: '${m.text}' shows twice`);
            prev = id;
            seen.add(m.text);
        }
        for (const m of list)
            if (!texts.includes(m.text)) throw new Error(`${name}: unexpected message ${m.id}:'${m.text}'`);
        lists[name] = JSON.stringify(list);
    }
    const [a, b] = Object.values(lists);
    if (a !== b) throw new Error(`the pages disagree: ${Object.entries(lists).map(([n, l]) => `${n} ${l}`).join(' vs ')}`);
}

async function main() {
    const base = process.argv[2];
    if (!base || !/^https?:\/\//.test(base)) throw new Error('usage: node tests/browser/chat.mjs http://HOST:PORT/');
    const peers = createRequire(path.join(root, 'tests', 'peers', 'package.json'));
    let chromium;
    try {
        ({ chromium } = peers('playwright-core'));
    } catch (e) {
        throw new Error('npm playwright-core missing in tests/peers (run scripts/deps.sh)');
    }
    const exe = process.env.CHROMIUM || '/usr/bin/chromium';
    if (!fs.existsSync(exe)) throw new Error(`${exe}: no such browser (run scripts/deps.sh)`);

    // chromium writes its profile, caches and crash reports under HOME: a scratch one.
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'squall-chromium-'));
    browser = await chromium.launch({
        executablePath: exe,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
            '--disable-extensions', '--disable-background-networking'],
        env: { ...process.env, HOME: home, XDG_CONFIG_HOME: home, XDG_CACHE_HOME: home },
        timeout: WAIT_MS,
    });
    const errors = [];
    const room = `browser-${process.pid}-${Date.now().toString(36)}`;
    const open = async (name, transport) => {
        const ctx = await browser.newContext({ viewport: { width: 800, height: 600 } });
        const page = await ctx.newPage();
        page.setDefaultTimeout(WAIT_MS);
        page.on('pageerror', (e) => errors.push(`${name}: ${String(e.message).split('\n')[0]}`));
        const url = new URL(`?room=${encodeURIComponent(room)}&transport=${transport}`, base);
        const res = await page.goto(url.href, { timeout: WAIT_MS });
        if (res === null || res.status() !== 200)
            throw new Error(`${name}: GET ${url.href} answered ${res === null ? 'nothing' : res.status()}`);
        pages[name] = page;
        return page;
    };
    const a = await open('ws', 'ws');
    const b = await open('longpoll', 'longpoll');
    await waitStatus('ws', a, 'live: ws');
    await waitStatus('longpoll', b, 'live: longpoll');

    const texts = [];
    const say = async (name, page, text) => {
        texts.push(text);
        await send(name, page, text);
    };
    await say('ws', a, 'hello from the ws page');
    await say('longpoll', b, 'hello from the longpoll page');
    await expectAll(texts);
    await screenshots();

    for (const transport of ['sse', 'poll']) {
        await a.selectOption('#transport', transport);
        await waitStatus('ws', a, `live: ${transport}`);
        await say('ws', a, `from the first page on ${transport}`);
        await expectAll(texts);
        await say('longpoll', b, `to the first page on ${transport}`);
        await expectAll(texts);
    }
    if (errors.length > 0) throw new Error(`page error: ${errors[0]}`);
    await browser.close();
    browser = null;
    cleanupSync();
    clearTimeout(deadline);
    console.log(`chat.mjs: ok, ${texts.length} messages on both pages (ws, longpoll, sse, poll); ` +
        `screenshots in ${artifacts}`);
}

main().catch((e) => die(e && e.message ? e.message : e));
