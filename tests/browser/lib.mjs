// Shared pieces of the browser tests: a static server for dist/, Chromium with or without
// WebGPU (playwright-core driving /usr/bin/chromium; never `npx playwright install`), page
// helpers (console errors, polling window.cdl.state()) and artifact paths.
//
// playwright-core is resolved from CDL_NODE_MODULES (default ~/.cache/cdl/tools/node), where
// scripts/test installs the version pinned in tests/browser/package.json.

import { createRequire } from 'node:module';
import http from 'node:http';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const root = path.resolve(here, '..', '..');
export const dist = process.env.CDL_DIST || path.join(root, 'dist');
export const artifacts = process.env.CDL_ARTIFACTS || path.join(root, 'target', 'browser-artifacts');
const nodeDir = process.env.CDL_NODE_MODULES || path.join(os.homedir(), '.cache', 'cdl', 'tools', 'node');
const require = createRequire(path.join(nodeDir, 'package.json'));
const { chromium } = require('playwright-core');

export const CHROMIUM = process.env.CDL_CHROMIUM || '/usr/bin/chromium';
// TESTING.md: WebGPU headless needs only --enable-unsafe-webgpu; the rest keeps Chromium off the network.
const QUIET = ['--no-sandbox', '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--no-first-run', '--disable-quic', '--disable-dev-shm-usage'];

const MIME = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json', '.svg': 'image/svg+xml',
  '.png': 'image/png', '.safetensors': 'application/octet-stream', '.csv': 'text/csv',
};

/// Serves `dir` on 127.0.0.1 (a free port); resolves to { url, close }.
export function serve(dir = dist) {
  const server = http.createServer((req, res) => {
    const rel = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    let file = path.normalize(path.join(dir, rel));
    if (!file.startsWith(path.resolve(dir))) { res.writeHead(403).end(); return; }
    if (rel.endsWith('/')) file = path.join(file, 'index.html');
    fs.readFile(file, (err, body) => {
      if (err) { res.writeHead(404, { 'content-type': 'text/plain' }).end('not found'); return; }
      res.writeHead(200, { 'content-type': MIME[path.extname(file)] || 'application/octet-stream', 'cache-control': 'no-store' });
      res.end(body);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    resolve({ url: `http://127.0.0.1:${port}/`, close: () => new Promise((r) => server.close(r)) });
  }));
}

/// Chromium with WebGPU (SwiftShader when there is no GPU), or without it (`webgpu: false`).
export async function launch({ webgpu = true, extraArgs = [] } = {}) {
  const args = [...QUIET, ...(webgpu ? ['--enable-unsafe-webgpu'] : []), ...extraArgs];
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args, timeout: 60_000 });
}

/// A new page that records console errors and uncaught exceptions in `page.errors`.
export async function newPage(browser, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true, ...opts });
  const page = await context.newPage();
  page.errors = [];
  page.logs = [];
  page.on('console', (m) => {
    page.logs.push(`${m.type()}: ${m.text()}`);
    if (m.type() === 'error') page.errors.push(`console.error: ${m.text()}`);
  });
  page.on('pageerror', (e) => page.errors.push(`page error: ${e.message}`));
  return page;
}

/// Runs `body(page)` on a new page of a fresh Chromium (context options `context`), requires no
/// console errors or uncaught exceptions by its end, closes the browser and returns the body's
/// note.
export async function withBrowser(body, context = {}) {
  const browser = await launch();
  try {
    const page = await newPage(browser, context);
    const note = await body(page);
    assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
    return note;
  } finally {
    await browser.close();
  }
}

/// window.cdl.state() of `frame` (a page or an iframe), or null before the demo is up.
export async function state(frame) {
  return frame.evaluate(() => (window.cdl && window.cdl.state ? window.cdl.state() : null));
}

/// Polls `state` until `pred(state)` holds; returns that state. Fails after `timeout` ms with
/// the last state in the message.
export async function waitState(frame, pred, { timeout = 120_000, what = 'condition', every = 200 } = {}) {
  const t0 = Date.now();
  let s = null;
  while (Date.now() - t0 < timeout) {
    s = await state(frame);
    if (s && s.ready && pred(s)) return s;
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}; last state: ${JSON.stringify(s)}`);
}

export async function screenshot(page, name) {
  fs.mkdirSync(artifacts, { recursive: true });
  const file = path.join(artifacts, name);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

/// The tiny toy setting of the tests (SwiftShader is slow): width 16, 1 block, batch 32, M = 8,
/// 128 samples by DDIM-10, no shipped weights.
export const TINY = 'heat=none&width=16&emb=16&blocks=1&batch=32&M=8&samples=128&sampler_steps=10&pretrained=0';

/// TINY with some parameters replaced or added (`{ loss_b: 'none' }`).
export function tiny(overrides = {}) {
  const q = new URLSearchParams(TINY);
  for (const [k, v] of Object.entries(overrides)) q.set(k, v);
  return q.toString();
}

/// Distinct colours among the canvas's pixels: a drawn grid of images has many, a blank one one.
export function colours(page, id) {
  return page.evaluate((id) => {
    const c = document.getElementById(id);
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    const seen = new Set();
    for (let i = 0; i < d.length; i += 4) seen.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    return { n: seen.size, w: c.width, h: c.height };
  }, id);
}

/// The `cdl` binary the test suite built (scripts/test sets CDL_BIN).
export function cdlBin() {
  const bin = process.env.CDL_BIN || path.join(root, 'target', 'debug', 'cdl');
  assert(fs.existsSync(bin), `no cdl binary at ${bin}: build it (cargo build) or set CDL_BIN`);
  return bin;
}
