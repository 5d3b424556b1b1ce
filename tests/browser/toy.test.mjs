// The toy demo (index.html) in headless Chromium on WebGPU (SwiftShader): loading, training,
// pausing, saving and loading weights, uploads, device loss. Models are tiny (lib.mjs TINY).

import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, newPage, state, waitState, screenshot, assert, root, TINY, tiny, colours, cdlBin } from './lib.mjs';

/// Opens `query` on a fresh browser, runs `body(page)`, and always closes the browser.
async function withPage(base, query, body) {
  const browser = await launch();
  try {
    const page = await newPage(browser);
    await page.goto(`${base}index.html?${query}`);
    await waitState(page, () => true, { what: 'the demo to be ready' });
    return await body(page);
  } finally {
    await browser.close();
  }
}

const click = (page, id) => page.click(`#${id}`);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Pauses and waits until the samples of every model come from the final step.
async function pauseAndSettle(page) {
  await click(page, 'pause');
  return waitState(page, (s) => !s.running && s.pending === 0 && s.models.every((m) => m.samplesStep === m.step),
    { what: 'samples of the paused models' });
}

export const tests = [
  {
    name: 'shipped_weights_side_by_side_with_density_maps',
    timeout: 500,
    async run(base) {
      // The full page as a reader opens it (shipped weights for moons: DDPM left, ITD+CDL right,
      // log p(x) maps), with fewer samples so SwiftShader finishes in time. The screenshot is the
      // README's (CDL_UPDATE_SCREENSHOT=1 copies it to docs/browser-demo.png).
      return withPage(base, 'samples=300&sampler=ddpm&sampler_steps=1000', async (page) => {
        const s = await waitState(page, (s) => s.models.every((m) => m.samplesStep >= 1 && m.heatStep === m.step),
          { timeout: 400_000, what: 'samples and density maps of the shipped weights' });
        const file = await screenshot(page, 'readme-demo.png');
        if (process.env.CDL_UPDATE_SCREENSHOT === '1') {
          fs.mkdirSync(path.join(root, 'docs'), { recursive: true });
          fs.copyFileSync(file, path.join(root, 'docs', 'browser-demo.png'));
        }
        // Untrained weights give MMD ~0.108 here; the shipped ones (4000 steps) clearly less.
        for (const m of s.models) {
          assert(m.step > 0, `${m.loss}: shipped weights loaded (step ${m.step})`);
          assert(m.mmd < 0.09, `${m.loss}: samples closer to the data than untrained ones (MMD ${m.mmd})`);
          assert(m.heat === 'logp', `${m.loss}: log p(x) map drawn`);
        }
        // The map is on the canvas (its corner is the map's bottom colour, not the blank white) with
        // its colour bar, after the device's redraws (a cached map once vanished on them).
        const drawn = await page.evaluate(() => ['a', 'b'].map((s) => {
          const d = document.getElementById(`scatter-${s}`).getContext('2d').getImageData(2, 2, 1, 1).data;
          return { corner: [d[0], d[1], d[2]], bar: !document.getElementById(`cbar-${s}`).hidden };
        }));
        for (const d of drawn) {
          assert(d.bar && d.corner.some((c) => c < 200), `the map and its colour bar on the canvas: ${JSON.stringify(drawn)}`);
        }
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(MMD ${s.models.map((m) => `${m.loss} ${m.mmd.toFixed(4)}`).join(', ')})`;
      });
    },
  },
  {
    name: 'page_loads_without_console_errors',
    async run(base) {
      return withPage(base, TINY, async (page) => {
        const s = await state(page);
        assert(s.models.length === 2, `two models side by side, got ${s.models.length}`);
        assert(s.models[0].loss === 'ddpm' && s.models[1].loss === 'cdl', `DDPM vs ITD+CDL, got ${s.models.map((m) => m.loss)}`);
        assert(s.models.every((m) => m.samples === 128), 'initial samples drawn');
        assert(await page.isVisible('#scatter-a') && await page.isVisible('#scatter-b'), 'both panels visible');
        assert(await page.isHidden('#message'), `no message shown: ${await page.textContent('#message')}`);
        await screenshot(page, 'toy-loaded.png');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
      });
    },
  },
  {
    name: 'toy_training_lowers_loss_and_mmd',
    timeout: 400,
    async run(base) {
      // One model (ITD+CDL, width 32) so the steps go to it, sampled by DDPM-1000 (the library's
      // shortened schedules still scatter outliers at this training length); the side-by-side
      // screenshot comes from the next test. The plain ε-network (precond=eps): EDM's
      // preconditioning, the default, starts at the standardised Gaussian (MMD about 0.08 on
      // moons), which 400 steps of this tiny model do not yet beat, so only the ε-network shows
      // the samples move from noise towards the data within the test's budget.
      const query = tiny({ loss: 'cdl', loss_b: 'none', sample_every: 1e6, width: 32, sampler: 'ddpm', sampler_steps: 1000, precond: 'eps' });
      return withPage(base, query, async (page) => {
        const s0 = await state(page);
        const mmd0 = s0.models[0].mmd;
        // Heartbeat: the longest gap between 10 ms timer ticks while training (UI responsiveness).
        await page.evaluate(() => {
          window.__gap = 0; let last = performance.now();
          window.__beat = setInterval(() => { const t = performance.now(); window.__gap = Math.max(window.__gap, t - last); last = t; }, 10);
        });
        await click(page, 'start');
        const N = 400;
        await waitState(page, (s) => s.models[0].step >= N, { timeout: 300_000, what: `${N} steps` });
        const gap = await page.evaluate(() => { clearInterval(window.__beat); return window.__gap; });
        const s = await pauseAndSettle(page);
        const m = s.models[0];
        assert(m.lossLast < m.lossFirst - 0.05, `standard loss fell: first 20 steps ${m.lossFirst}, last 20 ${m.lossLast}`);
        assert(m.mmd < 0.9 * mmd0, `MMD of the samples fell: ${mmd0} at init, ${m.mmd} after ${m.step} steps`);
        assert(gap < 250, `the page stayed responsive: longest timer gap ${gap.toFixed(0)} ms`);
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        await screenshot(page, 'toy-trained-cdl.png');
        return `(${m.step} steps at ${s.stepsPerSec.toFixed(1)} steps/s; loss ${m.lossFirst.toFixed(3)} -> ${m.lossLast.toFixed(3)}; MMD ${mmd0.toFixed(4)} -> ${m.mmd.toFixed(4)}; longest UI gap ${gap.toFixed(0)} ms)`;
      });
    },
  },
  {
    name: 'side_by_side_training_and_pause_stops_steps',
    timeout: 400,
    async run(base) {
      return withPage(base, tiny({ sample_every: 1e6 }), async (page) => {
        await click(page, 'start');
        await waitState(page, (s) => s.models.every((m) => m.step >= 40), { timeout: 300_000, what: '40 steps of both models' });
        const s1 = await pauseAndSettle(page);
        await sleep(2000);
        const s2 = await state(page);
        assert(!s2.running, 'paused');
        assert(s2.models.every((m, i) => m.step === s1.models[i].step), `steps stopped: ${s1.models.map((m) => m.step)} then ${s2.models.map((m) => m.step)}`);
        assert(s2.models[0].step === s2.models[1].step, 'both models trained the same number of steps');
        assert(s2.models.every((m) => m.lossLast < m.lossFirst), `both losses fell: ${JSON.stringify(s2.models.map((m) => [m.lossFirst, m.lossLast]))}`);
        // Step runs exactly step_size (10) steps and stops.
        await click(page, 'step');
        const s3 = await waitState(page, (s) => s.models[0].step === s2.models[0].step + 10 && s.pending === 0, { what: 'one Step (10 steps)' });
        await sleep(1500);
        const s4 = await state(page);
        assert(s4.models[0].step === s3.models[0].step, `Step stops after 10 steps: ${s3.models[0].step} then ${s4.models[0].step}`);
        await waitState(page, (s) => s.models.every((m) => m.samplesStep === m.step), { what: 'samples after Step' });
        await screenshot(page, 'toy-side-by-side.png');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${s4.stepsPerSec.toFixed(2)} steps/s per model with two models)`;
      });
    },
  },
  {
    name: 'parallel_sampling_view_matches_the_cli_pass_counts',
    timeout: 400,
    async run(base) {
      // Both models trained 10 steps, then the parallel sampler of the view (20 steps, a window of
      // 6 that has to slide, τ = 0.05) against `cdl sample --sampler parallel` on the downloaded
      // weights with the same settings, seed (the page's 1) and number of samples (128).
      const query = tiny({ sample_every: 1e6, sampler_steps: 20, window: 6, tol: 0.05 });
      return withPage(base, query, async (page) => {
        await click(page, 'step');
        await waitState(page, (s) => s.models.every((m) => m.step === 10 && m.samplesStep === 10), { what: '10 steps of both models' });
        // Every text the pass counters show, to see the passes drawn while the sampler runs.
        await page.evaluate(() => {
          window.__passTexts = [];
          for (const id of ['picard-passes-a', 'picard-passes-b']) {
            const el = document.getElementById(id);
            new MutationObserver(() => window.__passTexts.push(`${id}: ${el.textContent}`)).observe(el, { childList: true, characterData: true, subtree: true });
          }
        });
        await click(page, 'parallel');
        const s = await waitState(page, (s) => s.parallel && s.parallel.models.length === 2 && s.parallel.models.every((m) => m.step === 10),
          { timeout: 300_000, what: 'the parallel sampling view' });
        assert(s.parallel.steps === 20 && s.parallel.window === 6 && s.parallel.tol === 0.05, `the page's settings: ${JSON.stringify(s.parallel)}`);
        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-parallel-'));
        const cli = [];
        for (const [i, side] of ['a', 'b'].entries()) {
          const view = s.parallel.models[i];
          assert(view.errors.length === view.passes && view.windows.length === view.passes, `model ${i}: one error and window per pass`);
          assert(view.windows[view.passes - 1][2] === 20, `model ${i}: the last pass converged all 20 steps: ${JSON.stringify(view.windows)}`);
          const [download] = await Promise.all([page.waitForEvent('download'), click(page, `save-file-${side}`)]);
          const file = path.join(tmp, `${side}-${download.suggestedFilename()}`);
          await download.saveAs(file);
          const out = execFileSync(cdlBin(), ['sample', '--checkpoint', file, '--sampler', 'parallel', '--variance', 'posterior',
            '--steps', '20', '--window', '6', '--tol', '0.05', '--seed', '1', '--n', '128', '--out', path.join(tmp, `${side}.csv`)]).toString();
          const passes = JSON.parse(out.trim().split('\n').pop()).passes;
          assert(passes === view.passes, `model ${i}: ${view.passes} passes in the page, ${passes} from cdl sample`);
          cli.push(passes);
          // Drawn and labelled: the plots have more than a background, their names say the axes.
          for (const id of [`picard-errors-${side}`, `picard-window-${side}`]) {
            assert(await page.isVisible(`#${id}`), `${id} visible`);
            const { n } = await colours(page, id);
            assert(n > 4, `${id} drawn (${n} colours)`);
          }
          const errLabel = await page.getAttribute(`#picard-errors-${side}`, 'aria-label');
          assert(/error/.test(errLabel) && /pass/.test(errLabel) && /τ/.test(errLabel), `error plot labelled: ${errLabel}`);
          const winLabel = await page.getAttribute(`#picard-window-${side}`, 'aria-label');
          assert(/pass/.test(winLabel) && /sampler steps/.test(winLabel), `window plot labelled: ${winLabel}`);
          assert((await page.textContent(`#picard-passes-${side}`)).includes(`${view.passes} passes`), 'pass count shown');
          const live = await page.evaluate((id) => window.__passTexts.filter((t) => t.startsWith(`${id}: running: pass`)), `picard-passes-${side}`);
          assert(live.length === view.passes, `model ${i}: each pass drawn while running: ${JSON.stringify(live)}`);
        }
        assert((await page.textContent('#parallel-caption')).includes('passes'), 'caption shown');
        await screenshot(page, 'toy-parallel.png');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(passes: page ${s.parallel.models.map((m) => m.passes)}, cdl sample ${cli})`;
      });
    },
  },
  {
    name: 'save_then_load_restores_identical_samples',
    timeout: 400,
    async run(base) {
      return withPage(base, tiny({ loss_b: 'none', sample_every: 1e6 }), async (page) => {
        await click(page, 'step');
        const trained = await waitState(page, (s) => s.models[0].step === 10 && s.models[0].samplesStep === 10, { what: '10 steps and their samples' });
        const want = trained.models[0].samplesHash;
        // Browser storage.
        await click(page, 'save-storage');
        await page.waitForFunction(() => /saved/.test(document.querySelector('#weights-msg').textContent));
        // File download, kept for the upload below.
        const [download] = await Promise.all([page.waitForEvent('download'), click(page, 'save-file-a')]);
        const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-')), download.suggestedFilename());
        await download.saveAs(file);
        assert(/\.safetensors$/.test(file) && fs.statSync(file).size > 1000, `downloaded ${file}`);
        const bytes = fs.readFileSync(file);
        const headerLen = Number(bytes.readBigUInt64LE(0));
        const header = JSON.parse(bytes.subarray(8, 8 + headerLen).toString());
        assert(header.__metadata__['cdl.arch'] === 'mlp' && header.__metadata__['run.config'], 'the CLI checkpoint format');

        await click(page, 'reset');
        const fresh = await waitState(page, (s) => s.models[0].step === 0 && s.models[0].samplesStep === 0, { what: 'reset' });
        assert(fresh.models[0].samplesHash !== want, 'reset changed the samples');
        await click(page, 'load-storage');
        const loaded = await waitState(page, (s) => s.models[0].step === 10 && s.models[0].samplesStep === 10, { what: 'load from storage' });
        assert(loaded.models[0].samplesHash === want, `storage: identical samples (${loaded.models[0].samplesHash} vs ${want})`);

        await click(page, 'reset');
        await waitState(page, (s) => s.models[0].step === 0 && s.models[0].samplesStep === 0, { what: 'reset' });
        await page.setInputFiles('#load-file-a', file);
        const up = await waitState(page, (s) => s.models[0].step === 10 && s.models[0].samplesStep === 10, { what: 'load from file' });
        assert(up.models[0].samplesHash === want, `file: identical samples (${up.models[0].samplesHash} vs ${want})`);
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
      });
    },
  },
  {
    name: 'sampling_animation_runs_from_noise_to_the_samples',
    timeout: 400,
    async run(base) {
      return withPage(base, tiny({ sample_every: 1e6 }), async (page) => {
        await click(page, 'step');
        const s = await waitState(page, (s) => s.models.every((m) => m.step === 10 && m.samplesStep === 10), { what: '10 steps and their samples' });
        await click(page, 'animate');
        await waitState(page, (s) => s.anim.playing && s.anim.shown > 2, { what: 'the animation to play' });
        await screenshot(page, 'sampling-animation.png');
        const caption = await page.evaluate(() => {
          // The caption box is drawn over the top-left corner: not the plot's white.
          const d = document.getElementById('scatter-a').getContext('2d').getImageData(8, 8, 1, 1).data;
          return [d[0], d[1], d[2]];
        });
        const done = await waitState(page, (s) => s.anim.played === 1 && !s.anim.playing, { what: 'the animation to end' });
        const a = done.anim.last;
        // DDIM-10 from x_T: 11 frames; x_T is N(0, I) (128 points: variance within ±40%).
        assert(a.frames === 11 && a.steps === 10, `frames ${a.frames}, steps ${a.steps}`);
        assert(a.firstVar.every((v) => v > 0.6 && v < 1.4), `x_T variances ${a.firstVar}`);
        // The frames come from the f64 host path, the samples shown from the device (f32 state):
        // equal within 2e-5, the bound tests/native/eval_gpu_sampler.rs holds the two paths to.
        assert(typeof a.lastGap === 'number' && a.lastGap <= 2e-5, `the animation ends on the samples shown (largest difference ${a.lastGap})`);
        assert(caption.some((c) => c < 250), `caption drawn (pixel ${caption})`);
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
      });
    },
  },
  {
    name: 'bad_uploads_are_refused_with_clear_errors',
    async run(base) {
      return withPage(base, tiny({ loss_b: 'none' }), async (page) => {
        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-'));
        const junk = path.join(tmp, 'junk.safetensors');
        fs.writeFileSync(junk, Buffer.from('this is not a safetensors file at all'));
        await page.setInputFiles('#load-file-a', junk);
        await page.waitForFunction(() => document.querySelector('#weights-msg').className === 'error');
        const msg = await page.textContent('#weights-msg');
        assert(/junk\.safetensors: not a CDL weights file/.test(msg), `weights error: ${msg}`);

        await page.selectOption('#dataset', 'csv');
        const bad = path.join(tmp, 'bad.csv');
        fs.writeFileSync(bad, 'x,y\n1,2\n3,oops\n');
        await page.setInputFiles('#csv-file', bad);
        await page.waitForFunction(() => document.querySelector('#data-error').textContent.length > 0);
        const err = await page.textContent('#data-error');
        assert(/bad\.csv: line 3/.test(err), `CSV error names the file and line: ${err}`);

        const good = path.join(tmp, 'ring.csv');
        const rows = ['x,y'];
        for (let i = 0; i < 400; i++) rows.push(`${Math.cos(i * 0.1) * 3 + 10},${Math.sin(i * 0.1) * 3 - 5}`);
        fs.writeFileSync(good, rows.join('\n'));
        await page.setInputFiles('#csv-file', good);
        const s = await waitState(page, (s) => s.data.name === 'ring.csv', { what: 'the CSV data' });
        assert(s.data.n === 400, `400 points, got ${s.data.n}`);
        assert((await page.textContent('#data-error')) === '', 'error cleared');

        // Drawing your own points.
        await page.selectOption('#dataset', 'draw');
        const box = await page.locator('#draw-canvas').boundingBox();
        await page.mouse.move(box.x + 40, box.y + 40);
        await page.mouse.down();
        for (let i = 0; i < 30; i++) await page.mouse.move(box.x + 40 + i * 5, box.y + 60 + (i % 5) * 8);
        await page.mouse.up();
        await click(page, 'draw-use');
        const d = await waitState(page, (s) => s.data.name === 'drawing', { what: 'the drawn data' });
        assert(d.data.n >= 60, `drawn points: ${d.data.n}`);
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
      });
    },
  },
  {
    name: 'device_loss_shows_message_and_restarts_from_kept_weights',
    timeout: 300,
    async run(base) {
      return withPage(base, tiny({ loss_b: 'none' }), async (page) => {
        await click(page, 'step');
        await waitState(page, (s) => s.models[0].step === 10 && s.models[0].samplesStep === 10, { what: '10 steps' });
        await page.evaluate(() => window.cdl.loseDevice());
        await page.waitForSelector('#device-lost', { state: 'visible', timeout: 30_000 });
        const text = await page.textContent('#lost-text');
        assert(/device was lost/.test(text) && /step 10/.test(text), `message: ${text}`);
        await screenshot(page, 'device-lost.png');
        await click(page, 'restart');
        const s = await waitState(page, (s) => !s.lost && s.models[0].step === 10 && s.models[0].samplesStep === 10, { what: 'restart' });
        assert(await page.isHidden('#device-lost'), 'message hidden after restart');
        await click(page, 'step');
        await waitState(page, (s) => s.models[0].step === 20, { what: 'training after restart' });
        const errors = page.errors.filter((e) => !/destroyed|lost/i.test(e));
        assert(errors.length === 0, `console errors:\n${errors.join('\n')}`);
        return `(restarted at step ${s.models[0].step})`;
      });
    },
  },
];
