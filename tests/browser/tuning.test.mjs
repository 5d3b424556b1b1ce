// Kernel variants chosen by measurement in the page (src/ops/tune.rs, src/web/store.rs): the
// page times the variants of the shapes it meets once it is ready, keeps the choices in browser
// storage per adapter, and a second visit starts with them and measures nothing again; a
// corrupt entry is ignored with one warning and rewritten; ?variant= forces a variant, and a
// misspelt one stops start-up with the registry's message. Models are tiny (lib.mjs TINY).

import { waitState, withBrowser, assert, tiny } from './lib.mjs';

/// Trains a few steps from the current state, pauses, and waits until the page has redrawn the
/// samples of the final step and saved whatever it measured (`saves` at least `saves`).
async function trainAndSettle(page, saves) {
  const s0 = await waitState(page, () => true, { what: 'the page to be ready' });
  const from = s0.models[0].step;
  await page.evaluate(() => window.cdl.start());
  await waitState(page, (s) => s.models.every((m) => m.step >= from + 4), { what: `4 steps from ${from}` });
  await page.evaluate(() => window.cdl.pause());
  return waitState(page, (s) => !s.running && s.models.every((m) => m.samplesStep === m.step) && s.kernels.saves >= saves,
    { what: `the samples of the final step and ${saves} save(s) of the kernel choices` });
}

/// The page's kernel-variant entries in browser storage, as text.
async function storedChoices(page) {
  return page.evaluate(() => new Promise((resolve, reject) => {
    const open = indexedDB.open('cdl', 1);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const store = open.result.transaction('weights', 'readonly').objectStore('weights');
      const keys = store.getAllKeys();
      keys.onsuccess = () => {
        const mine = keys.result.filter((k) => String(k).startsWith('kernel-variants/'));
        const out = {};
        let left = mine.length;
        if (left === 0) resolve(out);
        for (const k of mine) {
          const get = store.get(k);
          get.onsuccess = () => { out[k] = new TextDecoder().decode(get.result); if (--left === 0) resolve(out); };
        }
      };
    };
  }));
}

/// Overwrites every kernel-variant entry with `text`.
async function overwriteChoices(page, text) {
  return page.evaluate((text) => new Promise((resolve, reject) => {
    const open = indexedDB.open('cdl', 1);
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
      const tx = open.result.transaction('weights', 'readwrite');
      const store = tx.objectStore('weights');
      const keys = store.getAllKeys();
      keys.onsuccess = () => {
        for (const k of keys.result.filter((k) => String(k).startsWith('kernel-variants/'))) {
          store.put(new TextEncoder().encode(text), k);
        }
      };
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    };
  }), text);
}

export const tests = [
  {
    name: 'kernel_choices_are_measured_once_and_read_on_the_next_visit',
    timeout: 300,
    async run(base) {
      return withBrowser(async (page) => {
        const url = `${base}index.html?${tiny({ loss_b: 'none' })}`;

        // First visit: nothing saved; start-up runs the defaults; training measures its shapes.
        await page.goto(url);
        const ready = await waitState(page, () => true, { what: 'the page to be ready' });
        assert(ready.kernels.tuning === true && ready.kernels.loaded === 0 && ready.kernels.choices === 0,
          `tuning on, nothing read, nothing measured during start-up: ${JSON.stringify(ready.kernels)}`);
        const first = await trainAndSettle(page, 1);
        assert(first.kernels.choices > 0, `training measured its shapes: ${JSON.stringify(first.kernels)}`);
        const saved = await storedChoices(page);
        const entries = Object.values(saved).map((t) => JSON.parse(t));
        assert(entries.length === 1, `one entry for this adapter: ${Object.keys(saved)}`);
        const shapes = Object.keys(entries[0].choices).filter((k) => !k.startsWith('passed '));
        assert(entries[0].schema === 1 && shapes.length === first.kernels.choices,
          `the entry holds every measured choice: ${shapes.length} of ${first.kernels.choices}`);
        assert(Object.keys(entries[0].choices).some((k) => k.startsWith('passed matmul')), 'and which variants passed the check');

        // Second visit: the choices are read during start-up and training measures nothing.
        await page.goto(url);
        const again = await trainAndSettle(page, 0);
        assert(again.kernels.loaded === Object.keys(entries[0].choices).length && again.kernels.choices === first.kernels.choices,
          `read every saved choice: ${JSON.stringify(again.kernels)}`);
        await new Promise((r) => setTimeout(r, 1000));
        const after = await waitState(page, () => true);
        assert(after.kernels.saves === 0, `nothing measured or saved on the second visit: ${JSON.stringify(after.kernels)}`);

        // A corrupt entry: one warning, the page measures afresh and rewrites it.
        await overwriteChoices(page, '{"schema": 1, "choices": [');
        page.logs.length = 0;
        await page.goto(url);
        const corrupt = await trainAndSettle(page, 1);
        const warnings = page.logs.filter((l) => /ignoring the saved kernel-variant choices/.test(l));
        assert(warnings.length === 1 && warnings[0].startsWith('warning: ignoring'), `one console warning: ${JSON.stringify(page.logs)}`);
        assert(corrupt.kernels.loaded === 0 && /ignoring/.test(corrupt.kernels.cacheWarning) && corrupt.kernels.choices > 0,
          `measured afresh: ${JSON.stringify(corrupt.kernels)}`);
        const rewritten = Object.values(await storedChoices(page)).map((t) => JSON.parse(t));
        assert(rewritten.length === 1 && Object.keys(rewritten[0].choices).length > 0, 'the entry is rewritten');
        return `(${first.kernels.choices} shapes measured, chosen ${JSON.stringify(first.kernels.chosen)}; read back on the next visit)`;
      });
    },
  },
  {
    name: 'a_forced_variant_is_used_and_a_misspelt_one_is_named',
    timeout: 240,
    async run(base) {
      return withBrowser(async (page) => {
        await page.goto(`${base}index.html?${tiny({ loss_b: 'none', variant: 'matmul:tiled' })}`);
        const s = await trainAndSettle(page, 0);
        assert(JSON.stringify(s.kernels.forced) === '["matmul:tiled"]', `forced: ${JSON.stringify(s.kernels)}`);
        assert(s.models[0].lossLast > 0 && Number.isFinite(s.models[0].lossLast), `trains with the tiled scheme: ${s.models[0].lossLast}`);

        await page.goto(`${base}index.html?${tiny({ variant: 'matmul:tild' })}`);
        await page.waitForFunction(() => document.body.dataset.status === 'error', null, { timeout: 60_000 });
        const msg = await page.textContent('#message');
        assert(/^\?variant: no kernel variant "matmul":"tild"; available: .*matmul:tiled/.test(msg), `the message names the variant and the choices: ${msg}`);
        return `(${msg})`;
      });
    },
  },
];
