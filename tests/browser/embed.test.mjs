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
  // Browsers without WebGPU, three ways: Chromium without --enable-unsafe-webgpu (headless Linux
  // offers no adapter), with WebGPU switched off by feature flag, and a browser without the API
  // at all (navigator.gpu removed before the page runs, as in browsers that never shipped it);
  // and an adapter request that never answers (the page gives up after ?adapter_wait ms).
  // Image mode takes the same path. (With --enable-unsafe-webgpu, --disable-features=WebGPU
  // has no effect in Chromium 156: the adapter is still offered.)
  ...[
    ['without_enable_unsafe_webgpu', [], null, 'index.html'],
    ['disabled_by_feature_flag', ['--disable-features=WebGPU'], null, 'index.html'],
    ['without_navigator_gpu', [], 'remove', 'index.html'],
    ['when_the_adapter_never_answers', ['--enable-unsafe-webgpu'], 'hang', 'index.html?adapter_wait=1500'],
    ['in_image_mode', [], null, 'index.html?mode=image'],
  ].map(([variant, args, script, url]) => ({
    name: `no_webgpu_shows_what_is_needed_${variant}`,
    async run(base) {
      const browser = await launch({ webgpu: false, extraArgs: args });
      try {
        const page = await newPage(browser);
        if (script === 'remove') await page.addInitScript(() => { delete Navigator.prototype.gpu; });
        if (script === 'hang') await page.addInitScript(() => { GPU.prototype.requestAdapter = () => new Promise(() => {}); });
        await page.goto(`${base}${url}`);
        await page.waitForFunction(() => document.body.dataset.status === 'no-webgpu', null, { timeout: 60_000 });
        assert(await page.isVisible('#message'), 'the message is visible');
        const text = await page.textContent('#message');
        assert(/WebGPU/.test(text) && /Chrome/.test(text) && /--enable-unsafe-webgpu/.test(text), `message: ${text}`);
        await screenshot(page, `no-webgpu-${variant}.png`);
        const errors = page.errors.filter((e) => !/webgpu|adapter/i.test(e));
        assert(errors.length === 0, `console errors:\n${errors.join('\n')}`);
        const api = await page.evaluate(() => ('gpu' in navigator ? 'navigator.gpu present' : 'no navigator.gpu'));
        assert((script === 'remove') === (api === 'no navigator.gpu'), `navigator.gpu: ${api}`);
        if (script === 'hang') assert(/no answer to the adapter request within 1.5 s/.test(text), `message: ${text}`);
        return `(${api})`;
      } finally {
        await browser.close();
      }
    },
  })),
];
