// Image mode (index.html?mode=image) in headless Chromium on WebGPU (SwiftShader): a UNet trains
// on the built-in shapes and draws a sample grid that refreshes while it trains; CIFAR-10 batch
// files are read and bad files refused; weights go to the native `cdl` and come back from it;
// device loss restarts from the kept weights. The net is shrunk by URL parameters (SwiftShader
// is slow): 8 channels, two levels, no attention, batch 4.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import zlib from 'node:zlib';
import { launch, newPage, waitState, screenshot, assert, root, colours, cdlBin } from './lib.mjs';

/// The shrunken image setting of the tests.
const SMALL = {
  mode: 'image', ch: 8, mult: '1,2', blocks: 1, attn: 'none', batch: 4, K: 1, M: 2, samples: 4,
  sampler_steps: 4, shapes: 256, chunk: 2, step_size: 4, sample_every: 1e6,
  // Kernel tuning (tests/browser/tuning.test.mjs) times every new shape's variants once per
  // visit here, as each test starts with empty browser storage; on SwiftShader that would add
  // about a minute to each test without testing anything of image mode.
  tune: 0,
};

function query(overrides = {}) {
  return new URLSearchParams({ ...SMALL, ...overrides }).toString();
}

async function withPage(base, q, body) {
  const browser = await launch();
  try {
    const page = await newPage(browser);
    await page.goto(`${base}index.html?${q}`);
    await waitState(page, (s) => s.mode === 'image', { what: 'image mode to be ready' });
    return await body(page);
  } finally {
    await browser.close();
  }
}

const click = (page, id) => page.click(`#${id}`);

/// A converted FID Inception weights file with pytorch-fid's names and shapes and random values
/// (tools/inception_mirror.py, then tools/inception_to_safetensors.py; scripts/test sets CDL_PYTHON).
function inceptionWeights(dir) {
  const python = process.env.CDL_PYTHON;
  assert(python && fs.existsSync(python), 'CDL_PYTHON must name the mirror venv\'s python (scripts/test sets it)');
  const pth = path.join(dir, 'inception-random.pth');
  const out = path.join(dir, 'inception-random.safetensors');
  execFileSync(python, [path.join(root, 'tools', 'inception_mirror.py'), 'make-weights', pth, '7']);
  execFileSync(python, [path.join(root, 'tools', 'inception_to_safetensors.py'), pth, out]);
  return out;
}

/// `count` CIFAR-10 records (label byte + 3072 pixel bytes), labels 0..9, patterned pixels.
function cifarBatch(count) {
  const rec = 1 + 3 * 32 * 32;
  const b = Buffer.alloc(count * rec);
  for (let i = 0; i < count; i++) {
    b[i * rec] = i % 10;
    for (let j = 1; j < rec; j++) b[i * rec + j] = (i * 37 + j * (1 + (i % 3))) & 255;
  }
  return b;
}

/// A ustar archive of `files` ([name, bytes]): 512-byte headers, data padded to 512, two zero blocks.
function tar(files) {
  const blocks = [];
  for (const [name, data] of files) {
    const h = Buffer.alloc(512);
    const field = (text, at, len) => h.write(text, at, len, 'ascii');
    field(name, 0, 100);
    field('0000644\0', 100, 8);
    field('0000000\0', 108, 8);
    field('0000000\0', 116, 8);
    field(data.length.toString(8).padStart(11, '0') + '\0', 124, 12);
    field('00000000000\0', 136, 12);
    field('        ', 148, 8); // the checksum counts its own field as spaces
    field('0', 156, 1);
    field('ustar\0', 257, 6);
    field('00', 263, 2);
    let sum = 0;
    for (const b of h) sum += b;
    field(sum.toString(8).padStart(6, '0') + '\0 ', 148, 8);
    blocks.push(h, data, Buffer.alloc((512 - (data.length % 512)) % 512));
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}

export const tests = [
  {
    name: 'image_mode_trains_on_shapes_and_draws_a_refreshing_grid',
    timeout: 600,
    async run(base) {
      return withPage(base, query({ sample_every: 1500 }), async (page) => {
        const data = await colours(page, 'img-data-grid');
        assert(data.n > 50, `training images drawn (${data.n} colours)`);
        await click(page, 'img-start');
        // The grid is redrawn while training: two sampling runs at two different steps.
        const first = await waitState(page, (s) => s.model.samplesVersion >= 1 && s.model.samplesStep > 0 && s.running,
          { timeout: 400_000, what: 'a sample grid while training' });
        const again = await waitState(page, (s) => s.model.samplesVersion > first.model.samplesVersion && s.model.samplesStep > first.model.samplesStep,
          { timeout: 400_000, what: 'a second grid while training' });
        await click(page, 'img-pause');
        const s = await waitState(page, (s) => !s.running && s.model.samplesStep === s.model.step && s.model.gridDrawn,
          { timeout: 400_000, what: 'samples of the paused model' });
        const m = s.model;
        assert(m.step >= 4 && m.history === m.step, `steps recorded: ${m.step}, history ${m.history}`);
        assert(Number.isFinite(m.lossFirst) && Number.isFinite(m.lossLast), `finite losses ${m.lossFirst} → ${m.lossLast}`);
        assert(s.imagesPerSec > 0 && Math.abs(s.imagesPerSec - 4 * s.stepsPerSec) < 1e-9, `img/s ${s.imagesPerSec}`);
        assert(/img\/s/.test(await page.textContent('#img-rate')), 'img/s shown');
        const grid = await colours(page, 'img-samples');
        assert(grid.n > 50 && grid.w === 4 * 32 + 5 * 2, `a 4-wide sample grid (${grid.w} px, ${grid.n} colours)`);
        assert(s.data.name === 'shapes' && s.data.n === 256, `data ${JSON.stringify(s.data)}`);
        await screenshot(page, 'image-mode.png');
        // Unclipped x̂₀ (the checkbox) draws other samples from the same weights.
        await page.uncheck('#img-clip');
        const raw = await waitState(page, (t) => t.model.samplesVersion > s.model.samplesVersion && t.model.samplesStep === m.step,
          { timeout: 400_000, what: 'samples without clipping' });
        assert(raw.model.samplesHash !== m.samplesHash, 'clipping x̂₀ changes the samples of a young model');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${m.step} steps, grids at steps ${first.model.samplesStep} and ${again.model.samplesStep}, ${s.imagesPerSec.toFixed(2)} img/s)`;
      });
    },
  },
  {
    name: 'image_mode_reads_cifar_batches_and_refuses_bad_files',
    timeout: 400,
    async run(base) {
      return withPage(base, query(), async (page) => {
        const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-cifar-'));
        await page.selectOption('#img-data', 'cifar');
        assert(await page.isVisible('#cifar-file'), 'the file picker appears');
        const bad = [
          ['short.bin', Buffer.alloc(3073 * 2 + 5), /short\.bin/],
          ['labels.bin', Buffer.from([10, ...new Array(3072).fill(0)]), /labels\.bin.*label/],
          ['notes.txt', Buffer.from('hello'), /notes\.txt: not a CIFAR-10 file/],
          ['broken.tar.gz', Buffer.from('not gzip at all'), /broken\.tar\.gz/],
        ];
        for (const [name, bytes, want] of bad) {
          const file = path.join(tmp, name);
          fs.writeFileSync(file, bytes);
          await page.setInputFiles('#cifar-file', file);
          // Each file replaces the previous error with its own.
          await page.waitForFunction((n) => document.querySelector('#img-data-error').textContent.includes(n), name)
            .catch(() => {});
          const err = await page.textContent('#img-data-error');
          assert(want.test(err) && !err.includes('\n'), `${name}: ${err}`);
          const s = await waitState(page, () => true);
          assert(s.data.name === 'shapes', `${name} left the data as it was (${s.data.name})`);
        }
        const a = path.join(tmp, 'data_batch_1.bin');
        const b = path.join(tmp, 'data_batch_2.bin');
        fs.writeFileSync(a, cifarBatch(30));
        fs.writeFileSync(b, cifarBatch(20));
        await page.setInputFiles('#cifar-file', [a, b]);
        const s = await waitState(page, (s) => s.data.n === 50, { what: 'the CIFAR-10 batches' });
        assert(s.data.name === '2 CIFAR-10 batches', `data name ${s.data.name}`);
        assert((await page.textContent('#img-data-error')) === '', 'error cleared');
        await click(page, 'img-step');
        const t = await waitState(page, (s) => s.model.step === 4 && s.model.samplesStep === 4 && s.model.gridDrawn,
          { timeout: 300_000, what: '4 steps on CIFAR-10 and their grid' });
        assert((await colours(page, 'img-data-grid')).n > 50, 'CIFAR-10 images drawn');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${t.data.n} images)`;
      });
    },
  },
  {
    name: 'image_mode_reads_the_official_cifar_archive',
    timeout: 600,
    async run(base) {
      return withPage(base, query(), async (page) => {
        // cifar-10-binary.tar.gz as published: five training batches of 10,000 records (and the
        // test batch, which training skips) under cifar-10-batches-bin/. Patterned pixels keep
        // the gzip small; the page inflates 150 MB.
        const batch = cifarBatch(10_000);
        const names = [1, 2, 3, 4, 5].map((i) => `data_batch_${i}.bin`).concat(['test_batch.bin']);
        const archive = zlib.gzipSync(tar(names.map((n) => [`cifar-10-batches-bin/${n}`, batch])), { level: 1 });
        const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-cifar-')), 'cifar-10-binary.tar.gz');
        fs.writeFileSync(file, archive);
        await page.selectOption('#img-data', 'cifar');
        const t0 = Date.now();
        await page.setInputFiles('#cifar-file', file);
        const s = await waitState(page, (s) => s.data.n === 50_000, { timeout: 300_000, what: 'the 50,000 training images' });
        const secs = (Date.now() - t0) / 1000;
        assert(s.data.name === 'cifar-10-binary.tar.gz', `data name ${s.data.name}`);
        assert((await page.textContent('#img-data-error')) === '', 'no error');
        assert((await colours(page, 'img-data-grid')).n > 50, 'training images drawn');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(${(archive.length / 1e6).toFixed(1)} MB archive read in ${secs.toFixed(1)} s)`;
      });
    },
  },
  {
    name: 'image_mode_scores_fid_and_kid_with_a_chosen_inception_file',
    timeout: 600,
    async run(base) {
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-fid-'));
      const weights = inceptionWeights(tmp);
      const truncated = path.join(tmp, 'truncated.safetensors');
      fs.writeFileSync(truncated, fs.readFileSync(weights).subarray(0, 1 << 20));
      return withPage(base, query({ fid_n: 2 }), async (page) => {
        assert(await page.isDisabled('#img-fid'), 'FID/KID is disabled until the weights are chosen');
        // A cut file is refused, naming the file; the button stays disabled.
        await page.setInputFiles('#img-inception-file', truncated);
        await page.waitForFunction(() => document.querySelector('#img-fid-msg').textContent.includes('truncated.safetensors'),
          null, { timeout: 120_000 });
        assert(await page.isDisabled('#img-fid'), 'still disabled after a bad file');
        assert((await page.getAttribute('#img-fid-msg', 'class') || '').includes('error'), 'the refusal shows as an error');

        await page.setInputFiles('#img-inception-file', weights);
        await page.waitForFunction(() => /loaded inception-random/.test(document.querySelector('#img-fid-msg').textContent),
          null, { timeout: 120_000 });
        const loaded = await waitState(page, (s) => s.quality.weights === 'inception-random.safetensors', { what: 'the weights' });
        assert(loaded.quality.scores === null, 'no scores before the button');
        const t0 = Date.now();
        await click(page, 'img-fid');
        const s = await waitState(page, (s) => s.quality.scores !== null, { timeout: 500_000, what: 'FID and KID' });
        const secs = (Date.now() - t0) / 1000;
        const q = s.quality.scores;
        assert(q.n === 2 && q.step === 0, `2 images a side at step 0: ${JSON.stringify(q)}`);
        assert(Number.isFinite(q.fid) && q.fid > 0, `FID of an untrained model is finite and positive: ${q.fid}`);
        assert(Number.isFinite(q.kidMean) && Number.isFinite(q.kidStd) && q.kidStd >= 0, `KID: ${JSON.stringify(q)}`);
        const msg = await page.textContent('#img-fid-msg');
        assert(/FID \d/.test(msg) && /KID /.test(msg), `the result is shown: ${msg}`);
        await screenshot(page, 'image-fid.png');
        assert(page.errors.length === 0, `console errors:\n${page.errors.join('\n')}`);
        return `(FID ${q.fid.toFixed(1)}, KID ${q.kidMean.toFixed(4)} ± ${q.kidStd.toFixed(4)}; 4 images in ${secs.toFixed(1)} s)`;
      });
    },
  },
  {
    name: 'image_weights_go_to_the_cli_and_back_to_storage_and_survive_device_loss',
    timeout: 600,
    async run(base) {
      const cdl = cdlBin();
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'cdl-img-'));
      return withPage(base, query(), async (page) => {
        await click(page, 'img-step');
        const trained = await waitState(page, (s) => s.model.step === 4 && s.model.samplesStep === 4 && s.model.keptStep === 4,
          { timeout: 300_000, what: '4 steps, their samples and kept weights' });
        const want = trained.model.samplesHash;

        // Download, then the native sampler reads the file.
        const [download] = await Promise.all([page.waitForEvent('download'), click(page, 'img-save-file')]);
        const file = path.join(tmp, download.suggestedFilename());
        await download.saveAs(file);
        const pngs = path.join(tmp, 'pngs');
        execFileSync(cdl, ['sample', '--checkpoint', file, '--n', '2', '--sampler', 'ddim', '--steps', '3', '--out', pngs]);
        assert(fs.readdirSync(pngs).filter((f) => f.endsWith('.png')).length === 2, 'cdl sample wrote 2 PNGs from the page\'s weights');

        // Reset, then upload: the same samples.
        await click(page, 'img-reset');
        const fresh = await waitState(page, (s) => s.model.step === 0 && s.model.samplesStep === 0, { what: 'reset' });
        assert(fresh.model.samplesHash !== want, 'reset changed the samples');
        await page.setInputFiles('#img-load-file', file);
        const up = await waitState(page, (s) => s.model.step === 4 && s.model.samplesStep === 4, { what: 'load from file' });
        assert(up.model.samplesHash === want, `identical samples after the round trip (${up.model.samplesHash} vs ${want})`);

        // Browser storage (IndexedDB): save, reset, load.
        await click(page, 'img-save-storage');
        await page.waitForFunction(() => /saved step 4/.test(document.querySelector('#img-weights-msg').textContent));
        await click(page, 'img-reset');
        await waitState(page, (s) => s.model.step === 0 && s.model.samplesStep === 0, { what: 'reset' });
        await click(page, 'img-load-storage');
        const stored = await waitState(page, (s) => s.model.step === 4 && s.model.samplesStep === 4, { what: 'load from browser storage' });
        assert(stored.model.samplesHash === want, `identical samples from browser storage (${stored.model.samplesHash} vs ${want})`);

        // Device loss: the message, then a restart from the kept weights.
        await page.evaluate(() => window.cdl.loseDevice());
        await page.waitForSelector('#device-lost', { state: 'visible', timeout: 30_000 });
        assert(/step 4/.test(await page.textContent('#lost-text')), 'the message names the kept step');
        await click(page, 'restart');
        const r = await waitState(page, (s) => !s.lost && s.model.step === 4 && s.model.samplesStep === 4, { what: 'restart' });
        assert(r.model.samplesHash === want, 'the restarted model draws the same samples');

        // A checkpoint trained natively (the CLI's compact UNet on the same built-in shapes) opens here.
        const run = path.join(tmp, 'native');
        execFileSync(cdl, ['train', '--model', 'unet-compact', '--data', 'shapes', '--loss', 'ddpm', '--batch', '1',
          '--steps', '1', '--log-every', '1', '--checkpoint-every', '1', '--quiet', '--out', run]);
        await page.setInputFiles('#img-load-file', path.join(run, 'checkpoint.safetensors'));
        // Success and failure both name the file.
        await page.waitForFunction(() => document.querySelector('#img-weights-msg').textContent.includes('checkpoint.safetensors'),
          null, { timeout: 300_000 });
        const msg = await page.textContent('#img-weights-msg');
        assert(/loaded checkpoint\.safetensors/.test(msg), `native checkpoint: ${msg}`);
        const n = await waitState(page, (s) => s.model.step === 1 && s.model.samplesStep === 1 && s.model.gridDrawn,
          { timeout: 300_000, what: 'samples of the native checkpoint' });
        assert(n.model.channels === 32 && n.model.loss === 'ddpm', `the compact UNet and its loss adopted: ${JSON.stringify(n.model)}`);
        const errors = page.errors.filter((e) => !/destroyed|lost/i.test(e));
        assert(errors.length === 0, `console errors:\n${errors.join('\n')}`);
        return `(${n.model.params} parameters in the native net)`;
      });
    },
  },
];
