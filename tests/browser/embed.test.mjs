// The embedding: web/blog-example.html embeds two <cdl-demo> elements (web/cdl-demo.js), each an
// iframe of index.html?embed&... that loads the weights shipped in web/assets/ and shows samples
// at once; and the page without WebGPU says what it needs instead of staying blank.

import { launch, newPage, state, waitState, screenshot, assert } from './lib.mjs';

export const tests = [
  {
    name: 'blog_example_embeds_two_demos_with_shipped_weights',
    timeout: 400,
    async run(base) {
      const browser = await launch();
      try {
        const page = await newPage(browser);
        await page.goto(`${base}blog-example.html`);
        await page.waitForFunction(() => document.querySelectorAll('cdl-demo iframe').length === 2);
        const frames = [];
        const t0 = Date.now();
        while (frames.length < 2 && Date.now() - t0 < 60_000) {
          frames.splice(0, frames.length, ...page.frames().filter((f) => f.url().includes('embed=1')));
          await new Promise((r) => setTimeout(r, 200));
        }
        assert(frames.length === 2, `two embedded demos, found ${frames.length}`);
        const notes = [];
        for (const f of frames) {
          const s = await waitState(f, (s) => s.models[0].samplesStep >= 1, { timeout: 300_000, what: `samples in ${f.url()}` });
          const m = s.models[0];
          assert(s.models.length === 1, 'one model per embed');
          assert(m.step > 0 && m.samplesStep === m.step, `shipped weights loaded (step ${m.step})`);
          const flag = await f.evaluate(() => document.body.getAttribute('data-pretrained-0'));
          assert(flag === 'loaded', `data-pretrained-0 = ${flag}`);
          assert(m.mmd !== null && m.mmd < 0.09, `samples of the shipped ${m.loss} weights are closer to the data than untrained ones (~0.108): MMD ${m.mmd}`);
          notes.push(`${m.loss} MMD ${m.mmd.toFixed(4)}`);
        }
        await screenshot(page, 'blog-example.png');
        const url = new URL(frames.find((f) => f.url().includes('loss=cdl')).url());
        assert(url.searchParams.get('dataset') === 'moons', 'attributes become URL parameters');
        await screenshot(page, 'blog-example.png');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${notes.join(', ')})`;
      } finally {
        await browser.close();
      }
    },
  },
  // Chromium 156 with --enable-unsafe-webgpu --disable-features=WebGPU keeps navigator.gpu but never
  // answers requestAdapter (and the page's timeout does not fire either): not a usable variant.
  ...[
    ['without_enable_unsafe_webgpu', []],
  ].map(([variant, args]) => ({
    name: `no_webgpu_shows_what_is_needed_${variant}`,
    async run(base) {
      const browser = await launch({ webgpu: false, extraArgs: args });
      try {
        const page = await newPage(browser);
        await page.goto(`${base}index.html`);
        await page.waitForFunction(() => document.body.dataset.status === 'no-webgpu', null, { timeout: 60_000 });
        assert(await page.isVisible('#message'), 'the message is visible');
        const text = await page.textContent('#message');
        assert(/WebGPU/.test(text) && /Chrome/.test(text) && /--enable-unsafe-webgpu/.test(text), `message: ${text}`);
        await screenshot(page, `no-webgpu-${variant}.png`);
        const errors = page.errors.filter((e) => !/webgpu|adapter/i.test(e));
        assert(errors.length === 0, `console errors:\n${errors.join('\n')}`);
        return `(${await page.evaluate(() => ('gpu' in navigator ? 'navigator.gpu present' : 'no navigator.gpu'))})`;
      } finally {
        await browser.close();
      }
    },
  })),
];
