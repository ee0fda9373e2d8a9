// docs.mjs — the /docs page of sq_openapi_mount in a real browser (Debian's chromium,
// headless, driven by npm's playwright-core from tests/peers), against a running server
// that serves the lecture's app.
//
//   node tests/browser/docs.mjs http://127.0.0.1:PORT/
//
// Opens /docs with every request to another origin refused (the page must work offline),
// waits for Swagger UI to render the three operations (GET /, GET and PUT
// /items/{item_id}), opens GET /items/{item_id}, clicks "Try it out", fills item_id 42
// and q "hello", clicks "Execute" and waits for the live response: status 200 and a body
// holding "item_id": 42 and "q": "hello". Saves a screenshot to $SQUALL_ARTIFACTS
// (build/artifacts when unset) as docs.png.
//
// Exits 0 when every check passed; otherwise 1 with one line on stderr saying why.
// Bounded: the whole run is cut at DOCS_DEADLINE_MS (40 s), each wait at 10 s. Env:
// CHROMIUM (the browser, /usr/bin/chromium), SQUALL_ARTIFACTS.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const WAIT_MS = 10000;
const DEADLINE_MS = Number(process.env.DOCS_DEADLINE_MS || 40000);
const artifacts = path.resolve(process.env.SQUALL_ARTIFACTS || path.join(root, 'build', 'artifacts'));

let browser = null;
let home = null;
let page = null;

function cleanupSync() {
    if (home !== null) fs.rmSync(home, { recursive: true, force: true });
    home = null;
}

async function screenshot() {
    fs.mkdirSync(artifacts, { recursive: true });
    await page.screenshot({ path: path.join(artifacts, 'docs.png'), fullPage: true });
}

async function die(reason) {
    process.stderr.write(`docs.mjs: ${String(reason).split('\n')[0]}\n`);
    try {
        if (page !== null) await Promise.race([screenshot(), new Promise((r) => setTimeout(r, 3000))]);
        if (browser !== null) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 3000))]);
    } catch (e) {
        /* exiting anyway */
    }
    cleanupSync();
    process.exit(1);
}

setTimeout(() => die(`timed out after ${DEADLINE_MS} ms`), DEADLINE_MS).unref();
process.on('exit', cleanupSync);
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => die(`killed by ${sig}`));

async function main() {
    const base = process.argv[2];
    if (!base || !/^http:\/\//.test(base)) throw new Error('usage: node tests/browser/docs.mjs http://HOST:PORT/');
    const origin = new URL(base).origin;
    const peers = createRequire(path.join(root, 'tests', 'peers', 'package.json'));
    let chromium;
    try {
        ({ chromium } = peers('playwright-core'));
    } catch (e) {
        throw new Error('npm playwright-core missing in tests/peers (run scripts/deps.sh)');
    }
    const exe = process.env.CHROMIUM || '/usr/bin/chromium';
    if (!fs.existsSync(exe)) throw new Error(`${exe}: no such browser (run scripts/deps.sh)`);
    home = fs.mkdtempSync(path.join(os.tmpdir(), 'squall-chromium-'));
    browser = await chromium.launch({
        executablePath: exe,
        headless: true,
        args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run',
            '--disable-extensions', '--disable-background-networking'],
        env: { ...process.env, HOME: home, XDG_CONFIG_HOME: home, XDG_CACHE_HOME: home },
        timeout: WAIT_MS,
    });
    const ctx = await browser.newContext({ viewport: { width: 1100, height: 900 } });
    page = await ctx.newPage();
    const errors = [];
    const elsewhere = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.route('**/*', (route) => {
        const url = route.request().url();
        if (url.startsWith('data:') || new URL(url).origin === origin) return route.continue();
        elsewhere.push(url);
        return route.abort();
    });

    const resp = await page.goto(new URL('docs', base).href, { timeout: WAIT_MS });
    if (resp === null || resp.status() !== 200) throw new Error(`/docs answered ${resp && resp.status()}`);
    const ops = page.locator('.opblock');
    await ops.nth(2).waitFor({ timeout: WAIT_MS }).catch(() => {
        throw new Error(`Swagger UI did not render 3 operations (page errors: ${errors.join('; ') || 'none'})`);
    });
    const shown = await page.$$eval('.opblock', (els) => els.map((e) =>
        `${e.querySelector('.opblock-summary-method')?.textContent.trim()} ` +
        `${e.querySelector('.opblock-summary-path')?.textContent.replace(/\u200b/g, '').trim()}`));
    const want = ['GET /', 'GET /items/{item_id}', 'PUT /items/{item_id}'];
    if (JSON.stringify(shown) !== JSON.stringify(want))
        throw new Error(`operations shown: ${JSON.stringify(shown)}, expected ${JSON.stringify(want)}`);

    const op = page.locator('#operations-default-read_item_items__item_id__get');
    await op.locator('.opblock-summary').first().click();
    await op.locator('button.try-out__btn').click({ timeout: WAIT_MS });
    await op.locator('tr[data-param-name="item_id"] input').fill('42', { timeout: WAIT_MS });
    await op.locator('tr[data-param-name="q"] input').fill('hello', { timeout: WAIT_MS });
    await op.locator('button.execute').click({ timeout: WAIT_MS });
    const status = op.locator('.live-responses-table .response .response-col_status');
    await status.first().waitFor({ timeout: WAIT_MS }).catch(() => {
        throw new Error('no live response after Execute');
    });
    const code = (await status.first().textContent()).trim();
    if (code !== '200') throw new Error(`Execute got status ${code}`);
    const body = await op.locator('.live-responses-table .response-col_description pre').first().textContent();
    let parsed;
    try {
        parsed = JSON.parse(body);
    } catch (e) {
        throw new Error(`response body is not JSON: ${body}`);
    }
    if (parsed.item_id !== 42 || parsed.q !== 'hello') throw new Error(`response body: ${body}`);
    if (elsewhere.length > 0) throw new Error(`the page asked another origin for ${elsewhere[0]}`);
    if (errors.length > 0) throw new Error(`page error: ${errors[0]}`);
    await screenshot();
    await browser.close();
    browser = null;
    cleanupSync();
    process.stdout.write('docs.mjs: ok\n');
}

main().catch((e) => die(e && e.message ? e.message : e));
