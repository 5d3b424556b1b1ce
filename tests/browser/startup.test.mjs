// The toy page's start-up in headless Chromium on WebGPU (SwiftShader): the status line names
// each stage while it runs, a stage over its time limit (?stage_timeout) is named in the message
// while the page still gets ready, and Start pressed before the page is ready is honoured.
// Models are tiny (lib.mjs TINY).

import { spawn } from 'node:child_process';
import os from 'node:os';
import { colours, state, waitState, withBrowser, assert, tiny } from './lib.mjs';

/// The toy page's stages, in order (src/web/runtime.rs, src/web/app.rs).
const STAGES = ['requesting a WebGPU adapter', 'creating the device', 'reading saved kernel choices', 'building the models', 'loading shipped weights',
  'drawing the first samples'];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Resolves once the page's start-up has reached `stage` (<body data-stage>).
async function inStage(page, stage) {
  for (;;) {
    const now = await page.evaluate(() => document.body.dataset.stage).catch(() => null);
    if (now === stage || page.isClosed()) return;
    await sleep(50);
  }
}

/// One busy process per core (a spinning node), killed by the returned function.
function busyCpu() {
  const kids = os.cpus().map(() => spawn(process.execPath, ['-e', 'for (;;) {}'], { stdio: 'ignore' }));
  return () => kids.forEach((k) => k.kill('SIGKILL'));
}

export const tests = [
  {
    name: 'the_embed_shows_the_start_up_stage_until_ready',
    timeout: 120,
    async run(base) {
      return withBrowser(async (page) => {
        // The embed hides the status line once ready; while it starts, a reader sees the stage.
        // The shipped files are fetched from page start (for the preview); they arrive 2.5 s
        // after the weights stage has begun, which waits for them.
        await page.route('**/assets/*.safetensors', async (route) => { await inStage(page, 'loading shipped weights'); await sleep(2500); await route.continue(); });
        await page.goto(`${base}index.html?embed&${tiny({ loss_b: 'none', pretrained: 1 })}`);
        await page.waitForFunction(() => document.body.dataset.stage === 'loading shipped weights', null, { timeout: 60_000 });
        assert(await page.isVisible('#status'), 'the status line is visible in the embed while it starts');
        const text = await page.textContent('#status');
        assert(/^loading shipped weights… \d+ s/.test(text), `the embed's status names the stage: ${text}`);
        const s = await waitState(page, () => true, { what: 'the embed to be ready' });
        assert(s.models.length === 1 && s.models[0].step > 0, 'the shipped model');
        assert(await page.isHidden('#status'), 'the status line is hidden in the embed once ready');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${text})`;
      });
    },
  },
  {
    name: 'start_up_names_its_stages_and_a_late_stage_still_gets_ready',
    timeout: 180,
    async run(base) {
      return withBrowser(async (page) => {
        // Every text of #status, with data-stage and window.cdl.state().stage at that moment, and
        // every text of #message.
        await page.addInitScript(() => {
          window.__status = [];
          window.__messages = [];
          const note = () => {
            const el = document.getElementById('status');
            if (!el) return;
            const m = document.getElementById('message').textContent;
            if (m && window.__messages[window.__messages.length - 1] !== m) window.__messages.push(m);
            const s = window.cdl && window.cdl.state ? window.cdl.state() : null;
            const e = { text: el.textContent, stage: document.body.dataset.stage ?? null, published: s && s.stage, ms: performance.now() };
            const last = window.__status[window.__status.length - 1];
            if (!last || last.text !== e.text || last.stage !== e.stage) window.__status.push(e);
          };
          new MutationObserver(note).observe(document, { subtree: true, childList: true, characterData: true, attributes: true, attributeFilter: ['data-stage'] });
        });
        // The shipped weights arrive 3.5 s into their stage (they are fetched from page start, for
        // the preview), so that stage's seconds are seen to count.
        await page.route('**/assets/*.safetensors', async (route) => { await inStage(page, 'loading shipped weights'); await sleep(3500); await route.continue(); });
        // A limit of 1 ms: every stage runs over it.
        await page.goto(`${base}index.html?${tiny({ loss_b: 'none', pretrained: 1, stage_timeout: 0.001 })}`);
        const s = await waitState(page, () => true, { what: 'the page to be ready despite late stages' });
        assert(s.models.length === 1 && s.models[0].step > 0 && s.models[0].samples === 128, 'the shipped model and its first samples');
        const log = await page.evaluate(() => window.__status);
        const texts = log.map((e) => e.text);
        assert(!texts.some((t) => /acquiring WebGPU/.test(t)), `no "acquiring WebGPU…": ${JSON.stringify(texts)}`);
        const starting = log.filter((e) => e.text !== 'loading…' && e.text !== 'ready');
        for (const e of starting) {
          const name = STAGES.find((n) => e.text.startsWith(`${n}… `));
          assert(name && /… \d+ s/.test(e.text), `the status names a stage and its seconds: ${e.text}`);
          assert(e.stage === name && e.published === name, `data-stage and state().stage follow the status: ${JSON.stringify(e)}`);
        }
        const seen = [...new Set(starting.map((e) => e.stage))];
        assert(JSON.stringify(seen) === JSON.stringify(STAGES), `every stage, in order: ${JSON.stringify(seen)}`);
        assert(texts[texts.length - 1] === 'ready', `ready at the end: ${texts[texts.length - 1]}`);
        // The seconds of a long stage are refreshed while it runs.
        const counted = starting.filter((e) => e.stage === 'loading shipped weights').map((e) => e.text.match(/… (\d+) s/)[1]);
        assert(['0', '1', '2'].every((n) => counted.includes(n)), `the weights stage counted its seconds: ${JSON.stringify(counted)}`);
        const attrs = await page.evaluate(() => ({ ...document.body.dataset }));
        assert(attrs.stage === 'ready' && attrs.status === 'ready', `body data: ${JSON.stringify(attrs)}`);
        assert(attrs.stageTimeout === STAGES[STAGES.length - 1], `the last late stage in data-stage-timeout: ${attrs.stageTimeout}`);
        assert(await page.isVisible('#message'), 'the message is visible');
        // While the weights were held, the message said that stage runs late and the page waits.
        const messages = await page.evaluate(() => window.__messages);
        assert(messages.some((m) => /"loading shipped weights" has run for over 0\.001 s\..*keeps waiting/.test(m)),
          `a note while the late stage ran: ${JSON.stringify(messages)}`);
        const msg = await page.textContent('#message');
        for (const name of STAGES) assert(msg.includes(`"${name}" took`), `the message names "${name}": ${msg}`);
        assert(/more than 0\.001 s/.test(msg) && /hardware WebGPU/.test(msg), `the limit and what to try: ${msg}`);
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        const spans = STAGES.map((n) => {
          const mine = starting.filter((e) => e.stage === n);
          const next = log[log.indexOf(mine[mine.length - 1]) + 1];
          return `${n} ${((next.ms - mine[0].ms) / 1000).toFixed(1)} s`;
        });
        return `(${spans.join(', ')})`;
      });
    },
  },
  {
    name: 'a_start_on_a_busy_cpu_always_names_its_stage_and_draws_both_panes',
    timeout: 300,
    async run(base) {
      // Every core spins in another process while the page (two models, shipped weights) starts.
      const stop = busyCpu();
      try {
        return await withBrowser(async (page) => {
          await page.goto(`${base}index.html?${tiny({ pretrained: 1 })}`, { waitUntil: 'commit' });
          const seen = [];
          let last = { text: null, at: Date.now() };
          let longest = 0;
          for (;;) {
            const now = await page.evaluate(() => {
              const el = document.getElementById('status');
              return { text: el ? el.textContent : null, status: document.body.dataset.status ?? null };
            }).catch(() => ({ text: null, status: null }));
            if (now.text !== last.text) {
              longest = Math.max(longest, Date.now() - last.at);
              last = { text: now.text, at: Date.now() };
              seen.push(now.text);
            }
            if (now.status === 'ready') break;
            // Before the page's code: "loading…"; then a stage and its seconds, refreshed every second.
            assert(now.text === null || now.text === 'loading…' || STAGES.some((n) => now.text.startsWith(`${n}… `)),
              `the status names a stage: ${now.text}`);
            assert(Date.now() - last.at < 10_000, `the status line stood still for 10 s: ${now.text}`);
            await sleep(250);
          }
          const s = await waitState(page, () => true, { what: 'the page to be ready' });
          assert(s.models.length === 2 && s.models.every((m) => m.samples === 128), 'both models drew their samples');
          for (const id of ['scatter-a', 'scatter-b']) {
            const { n } = await colours(page, id);
            assert(n > 3, `pane ${id} is drawn (${n} colours)`);
          }
          assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
          return `(${seen.length} status texts; the status line changed at least every ${(longest / 1000).toFixed(1)} s)`;
        });
      } finally {
        stop();
      }
    },
  },
  {
    name: 'image_mode_start_pressed_before_the_code_ran_trains_once_ready',
    timeout: 240,
    async run(base) {
      return withBrowser(async (page) => {
        await page.addInitScript(() => {
          document.addEventListener('click', (e) => {
            if (e.target.id === 'img-start') window.__startStage = document.body.dataset.stage ?? 'before the page code ran';
          }, true);
        });
        let release;
        const clicked = new Promise((r) => { release = r; });
        await page.route('**/*.wasm', async (route) => { await clicked; await route.continue(); });
        const q = new URLSearchParams({ mode: 'image', ch: 8, mult: '1,2', blocks: 1, attn: 'none', batch: 4, K: 1, M: 2,
          samples: 4, sampler_steps: 4, shapes: 256, chunk: 2, sample_every: 1e6 });
        await page.goto(`${base}index.html?${q}`, { waitUntil: 'commit' });
        await page.click('#img-start');
        release();
        const early = await page.evaluate(() => window.__startStage);
        assert(early === 'before the page code ran', `Start was pressed before the page's code ran (stage: ${early})`);
        const s = await waitState(page, (s) => s.mode === 'image' && s.model.step >= 4 && s.stepsPerSec > 0,
          { what: 'image training from the early Start', timeout: 200_000 });
        assert(s.running, 'running');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(step ${s.model.step} at ${s.imagesPerSec.toFixed(2)} images/s)`;
      });
    },
  },
  {
    name: 'start_pressed_during_start_up_trains_once_ready',
    timeout: 240,
    async run(base) {
      return withBrowser(async (page) => {
        const notes = [];
        // The stage the page was in when Start was clicked, read in the click itself.
        await page.addInitScript(() => {
          document.addEventListener('click', (e) => {
            if (e.target.id === 'start') window.__startStage = document.body.dataset.stage ?? 'before the page code ran';
          }, true);
        });
        /// Waits for training from the page's first state on: steps past the starting ones, a rate.
        const trains = async (what) => {
          const s0 = await waitState(page, () => true, { what: 'the page to be ready' });
          const from = Math.min(...s0.models.map((m) => m.step));
          const s = await waitState(page, (s) => s.models.every((m) => m.step >= from + 8) && s.stepsPerSec > 0,
            { what: `training from Start pressed ${what} (from step ${from})` });
          assert(s.running, 'running');
          assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
          notes.push(`${what}: step ${from} -> ${s.models.map((m) => m.step)} at ${s.stepsPerSec.toFixed(1)} steps/s`);
        };

        // 1. Before the page's code has run: the wasm is held back until Start was clicked.
        let release;
        const clicked = new Promise((r) => { release = r; });
        await page.route('**/*.wasm', async (route) => { await clicked; await route.continue(); });
        await page.goto(`${base}index.html?${tiny({ sample_every: 1e6 })}`, { waitUntil: 'commit' });
        await page.click('#start');
        release();
        const early = await page.evaluate(() => window.__startStage);
        assert(early === 'before the page code ran', `Start was pressed before the page's code ran (stage: ${early})`);
        await trains('before the code ran');
        await page.unroute('**/*.wasm');

        // 2. During a stage: the shipped weights are held back while window.cdl.start() is called.
        let weights;
        const held = new Promise((r) => { weights = r; });
        await page.route('**/assets/*.safetensors', async (route) => { await held; await route.continue(); });
        await page.goto(`${base}index.html?${tiny({ sample_every: 1e6, loss_b: 'none', pretrained: 1 })}`);
        await page.waitForFunction(() => document.body.dataset.stage === 'loading shipped weights');
        const save = await page.evaluate(() => {
          const b = document.getElementById('save-storage');
          return { disabled: b.disabled, title: b.title };
        });
        assert(save.disabled && /once the page is ready/.test(save.title), `Save is disabled with a reason while starting: ${JSON.stringify(save)}`);
        await page.evaluate(() => window.cdl.start());
        // The status line says the press was taken (at its next refresh, within a second or two).
        await page.waitForFunction(() => /^loading shipped weights… \d+ s · Start pressed/.test(document.getElementById('status').textContent));
        const pending = await state(page);
        assert(pending && pending.ready === false && pending.startPressed === true && pending.stage === 'loading shipped weights',
          `the state before ready: ${JSON.stringify(pending)}`);
        weights();
        await trains('while loading shipped weights');
        assert(!(await page.isDisabled('#save-storage')), 'Save is enabled once ready');
        assert((await page.getAttribute('#save-storage', 'title')) === null, 'its waiting title is gone');
        assert(await page.isHidden('#message'), `no message: ${await page.textContent('#message')}`);
        return `(${notes.join('; ')})`;
      });
    },
  },
];
