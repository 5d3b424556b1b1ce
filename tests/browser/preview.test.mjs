// The toy page's shipped preview (web/assets/*.safetensors: preview samples, log p map, training
// curve) drawn before any GPU work: with a WebGPU adapter request that never answers, both panes
// show the shipped samples over their map with a colour bar, the loss plots the shipped curve,
// and choosing another data set shows that set's preview. No GPU work runs: about 10 s.

import { colours, screenshot, state, withBrowser, assert } from './lib.mjs';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Polls `pred(state().preview)` (the page is never ready here) until it holds; returns the preview.
async function waitPreview(page, pred, what) {
  const t0 = Date.now();
  let p = null;
  while (Date.now() - t0 < 60_000) {
    const s = await state(page);
    p = s && s.preview;
    if (p && pred(p)) return p;
    await sleep(100);
  }
  throw new Error(`timed out waiting for ${what}; last preview: ${JSON.stringify(p)}`);
}

/// A hash of canvas `id`'s pixels.
const pixels = (page, id) => page.evaluate((id) => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 1) h = (Math.imul(h, 31) + d[i]) | 0;
  return h;
}, id);

/// Pixels of canvas `id` in the colour of a model's samples (draw.rs SAMPLE_COLOR, red over
/// anything) or of the standard loss's line (STD_COLOR, blue).
const tinted = (page, id) => page.evaluate((id) => {
  const c = document.getElementById(id);
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let red = 0;
  let blue = 0;
  for (let i = 0; i < d.length; i += 4) {
    if (d[i] > 150 && d[i + 1] < 110 && d[i + 2] < 120) red++;
    if (d[i + 2] > 130 && d[i] < 90 && d[i + 1] < 150) blue++;
  }
  return { red, blue };
}, id);

export const tests = [
  {
    name: 'the_shipped_preview_shows_without_webgpu',
    timeout: 120,
    async run(base) {
      return withBrowser(async (page) => {
        // The adapter request never answers; after 4 s (?adapter_wait) the page says it has no WebGPU.
        await page.addInitScript(() => {
          if (navigator.gpu) navigator.gpu.requestAdapter = () => new Promise(() => {});
        });
        const fetched = {};
        page.on('request', (r) => {
          const m = /assets\/(.*\.safetensors)$/.exec(r.url());
          if (m) fetched[m[1]] = (fetched[m[1]] || 0) + 1;
        });
        const t0 = Date.now();
        await page.goto(`${base}index.html?adapter_wait=4000`);
        const p = await waitPreview(page, (p) => p.set === 'moons' && p.models.length === 2, 'the moons preview');
        const shownMs = Date.now() - t0;
        const status = await page.textContent('#status');
        assert(/^requesting a WebGPU adapter… \d+ s/.test(status), `the status line still names the start-up stage: ${status}`);
        assert(JSON.stringify(p.models.map((m) => m.loss)) === '["ddpm","cdl"]', `DDPM left, ITD+CDL right: ${JSON.stringify(p.models)}`);
        for (const m of p.models) {
          assert(m.samples === 1000 && m.map === 128 && m.curve >= 2 && m.curveLastStep > 0 && m.mmd > 0,
            `${m.loss}: the shipped samples, map, curve and MMD: ${JSON.stringify(m)}`);
          assert(m.mapLabel === 'log p(x), nats' && m.mapRange[1] > m.mapRange[0], `${m.loss}: the map's colour bar: ${JSON.stringify(m)}`);
        }
        // Once the page has given up on WebGPU, the preview stays with the message.
        await page.waitForFunction(() => document.body.dataset.status === 'no-webgpu', null, { timeout: 30_000 });
        assert(/WebGPU/.test(await page.textContent('#message')), 'the no-WebGPU message');
        for (const side of ['a', 'b']) {
          // Samples (red) over a smooth map (many colours), the shipped curve (blue) in the loss plot.
          const scatter = await colours(page, `scatter-${side}`);
          assert(scatter.n > 500, `pane ${side}: a smooth map under the samples (${scatter.n} colours)`);
          const t = await tinted(page, `scatter-${side}`);
          assert(t.red > 200, `pane ${side}: the shipped samples drawn (${t.red} red pixels)`);
          const curve = await tinted(page, `curve-${side}`);
          assert(curve.blue > 20, `pane ${side}: the shipped curve drawn (${curve.blue} blue pixels)`);
          assert(await page.isVisible(`#legend-shipped-${side}`), `pane ${side}: the legend names the shipped curve`);
          assert(await page.isVisible(`#cbar-${side}`), `pane ${side}: the colour bar`);
          const bar = await colours(page, `cbar-${side}`);
          assert(bar.n > 50, `pane ${side}: the colour bar's colours (${bar.n})`);
          const label = await page.getAttribute(`#cbar-${side}`, 'aria-label');
          assert(/log p\(x\), nats/.test(label), `pane ${side}: the colour bar's label: ${label}`);
          const stats = await page.textContent(`#stats-${side}`);
          assert(/MMD \d\.\d{4} \(shipped samples\)/.test(stats), `pane ${side}: the shipped samples' MMD: ${stats}`);
        }
        await screenshot(page, 'preview-no-webgpu.png');
        // Another set: its preview at once; back to moons: the same preview, no second fetch.
        const before = await pixels(page, 'scatter-a');
        await page.selectOption('#dataset', 'spirals');
        const q = await waitPreview(page, (p) => p.set === 'spirals', 'the spirals preview');
        assert(q.models.every((m, i) => m.samples === 1000 && m.samplesHash !== p.models[i].samplesHash),
          `the spirals files' own samples: ${JSON.stringify(q.models)}`);
        assert(await pixels(page, 'scatter-a') !== before, 'the left pane shows the spirals preview');
        await page.selectOption('#dataset', 'moons');
        const r = await waitPreview(page, (p) => p.set === 'moons', 'the moons preview again');
        assert(r.models.every((m, i) => m.samplesHash === p.models[i].samplesHash), 'the moons preview again');
        const names = ['moons-ddpm', 'moons-cdl', 'spirals-ddpm', 'spirals-cdl'].map((n) => `${n}.safetensors`);
        assert(JSON.stringify(Object.keys(fetched).sort()) === JSON.stringify([...names].sort())
          && names.every((n) => fetched[n] === 1), `each shipped file fetched once: ${JSON.stringify(fetched)}`);
        return `(preview drawn ${shownMs} ms after navigation)`;
      });
    },
  },
];
