// Where the page is read: toy mode, image mode and the blog embed from 360 to 1920 px wide, the dark
// scheme, keyboard reach with names and focus rings, the embed's frame sized by its content, and
// "Copy link". Screenshots in target/browser-artifacts/layout-*.png; CDL_UPDATE_SCREENSHOT=1
// also copies the README's four to docs/screenshots/.

import fs from 'node:fs';
import path from 'node:path';
import { waitState, screenshot, assert, root, tiny, withBrowser } from './lib.mjs';

const WIDTHS = [360, 768, 1440, 1920];
/// The README's screenshots (artifact name → docs/screenshots/ name).
const README_SHOTS = ['layout-toy-360.png', 'layout-embed-360.png', 'layout-toy-1440.png', 'layout-image-1440.png'];
/// Shipped weights with a quick sampler, so the screenshots show moons in seconds on SwiftShader.
const SHIPPED = 'heat=none&samples=400&sampler=ddim&sampler_steps=40';
/// The shrunken image setting of tests/browser/image.test.mjs.
const SMALL_IMAGE = 'mode=image&ch=8&mult=1,2&blocks=1&attn=none&batch=4&K=1&M=2&samples=4&sampler_steps=4&shapes=256&chunk=2&step_size=4&sample_every=1000000';

/// Pages open at a phone's width (the blog tall enough that its lazy second frame loads too) or a desktop's.
const PHONE = { viewport: { width: 360, height: 800 } };
const TALL_PHONE = { viewport: { width: 360, height: 1600 } };
const DESKTOP = { viewport: { width: 1440, height: 900 } };

/// The height of the content of iframe `el` (its body and margins) in whole px: what the frame should be.
const FRAME_CONTENT = `(el) => { const d = el.contentDocument; const s = getComputedStyle(d.body);
  return Math.ceil(d.body.getBoundingClientRect().height + parseFloat(s.marginTop) + parseFloat(s.marginBottom)); }`;

const settle = (frame) => frame.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));

async function shoot(page, name) {
  const file = await screenshot(page, name);
  if (process.env.CDL_UPDATE_SCREENSHOT === '1' && README_SHOTS.includes(name)) {
    const dir = path.join(root, 'docs', 'screenshots');
    fs.mkdirSync(dir, { recursive: true });
    fs.copyFileSync(file, path.join(dir, name.replace('layout-', '')));
  }
}

/// Fails when `frame`'s document is wider than its viewport.
async function noOverflow(frame, what) {
  const m = await frame.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth }));
  assert(m.scroll <= m.inner, `${what}: horizontal overflow (scrollWidth ${m.scroll} > innerWidth ${m.inner})`);
}

/// The boxes of elements `ids` in `frame`; fails unless each is rendered, non-empty and inside
/// the viewport's width.
async function panes(frame, ids, what) {
  const boxes = await frame.evaluate((ids) => ids.map((id) => {
    const el = document.getElementById(id);
    if (!el) return { id, missing: true };
    const r = el.getBoundingClientRect();
    return { id, shown: el.checkVisibility({ visibilityProperty: true, opacityProperty: true }),
      left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, height: r.height, inner: innerWidth };
  }), ids);
  for (const b of boxes) {
    assert(!b.missing && b.shown && b.width > 0 && b.height > 0 && b.left >= 0 && b.right <= b.inner,
      `${what}: #${b.id} present, visible and inside the width: ${JSON.stringify(b)}`);
  }
  return Object.fromEntries(boxes.map((b) => [b.id, b]));
}

/// A test named `name` (at most `timeout` s) that runs `body(page, base)` through withBrowser.
const browserTest = (name, timeout, context, body) => ({ name, timeout, run: (base) => withBrowser((page) => body(page, base), context) });

/// Relative luminance of a CSS rgb()/rgba() colour; null when not opaque.
function luminance(css) {
  const m = css.match(/rgba?\(([\d.]+),\s*([\d.]+),\s*([\d.]+)(?:,\s*([\d.]+))?\)/);
  if (!m || (m[4] !== undefined && Number(m[4]) < 1)) return null;
  const lin = (c) => { const v = c / 255; return v <= 0.04045 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  return 0.2126 * lin(+m[1]) + 0.7152 * lin(+m[2]) + 0.0722 * lin(+m[3]);
}

/// Sets a control as a reader would (a select's option, a number, a checkbox) and fires `change`.
async function setControl(page, id, value) {
  await page.evaluate(([id, value]) => {
    const el = document.getElementById(id);
    if (el.type === 'checkbox') el.checked = value; else el.value = value;
    el.dispatchEvent(new Event('change', { bubbles: true }));
  }, [id, value]);
}

/// Clicks "Copy link" and returns the link shown (checked against the clipboard).
async function copyLink(page) {
  await page.click('#copy-link');
  await page.waitForFunction(() => document.body.dataset.linkCopied !== undefined);
  const href = await page.getAttribute('#share-link', 'href');
  assert(await page.isVisible('#share-link'), 'the link is shown');
  assert(await page.evaluate(() => document.body.dataset.linkCopied) === 'yes', 'the link went to the clipboard');
  const clip = await page.evaluate(() => navigator.clipboard.readText());
  assert(clip === href, `clipboard ${clip} = shown link ${href}`);
  return href;
}

/// Tabs through the page from the top until focus leaves the controls; every stop must have an
/// accessible name (Chromium's accessibility tree) and a visible focus ring, and every visible
/// focusable control must be a stop. Returns the number of stops.
async function tabThrough(page, what) {
  const positive = await page.evaluate(() => [...document.querySelectorAll('[tabindex]')].filter((e) => e.tabIndex > 0).map((e) => e.outerHTML));
  assert(positive.length === 0, `${what}: no positive tabindex: ${positive.join(', ')}`);
  const key = 'el => el.id || `${el.tagName.toLowerCase()}:${el.textContent.trim()}`';
  const expected = await page.evaluate(`[...document.querySelectorAll('a[href], button, input, select, textarea, summary, [tabindex]')]
    .filter((el) => !el.disabled && el.tabIndex >= 0 && el.checkVisibility({ visibilityProperty: true })).map(${key})`);
  const cdp = await page.context().newCDPSession(page);
  await cdp.send('Accessibility.enable');
  await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
  const seen = [];
  for (let i = 0; i < expected.length + 5; i++) {
    await page.keyboard.press('Tab');
    const stop = await page.evaluate(`(() => { const el = document.activeElement; if (!el || el === document.body) return null;
      const s = getComputedStyle(el); return { key: (${key})(el), outline: s.outlineStyle, width: parseFloat(s.outlineWidth) }; })()`);
    if (!stop || seen.some((s) => s.key === stop.key)) break;
    const { result } = await cdp.send('Runtime.evaluate', { expression: 'document.activeElement' });
    const { nodes } = await cdp.send('Accessibility.getPartialAXTree', { objectId: result.objectId, fetchRelatives: false });
    stop.name = (nodes[0] && nodes[0].name && nodes[0].name.value || '').trim();
    seen.push(stop);
  }
  const unnamed = seen.filter((s) => !s.name).map((s) => s.key);
  assert(unnamed.length === 0, `${what}: controls without an accessible name: ${unnamed.join(', ')}`);
  const noRing = seen.filter((s) => s.outline === 'none' || !(s.width >= 2)).map((s) => `${s.key} (${s.outline} ${s.width}px)`);
  assert(noRing.length === 0, `${what}: focus ring missing or under 2 px: ${noRing.join(', ')}`);
  const missed = expected.filter((k) => !seen.some((s) => s.key === k));
  assert(missed.length === 0, `${what}: not reached by Tab: ${missed.join(', ')}`);
  // Canvases: an image with a name saying what it shows.
  const canvases = await page.evaluate(() => [...document.querySelectorAll('canvas')].filter((c) => c.checkVisibility())
    .map((c) => ({ id: c.id, role: c.getAttribute('role'), label: (c.getAttribute('aria-label') || '').trim() })));
  const bad = canvases.filter((c) => c.role !== 'img' || c.label.length < 10);
  assert(canvases.length > 0 && bad.length === 0, `${what}: canvases need role=img and an aria-label: ${JSON.stringify(bad)}`);
  await cdp.detach();
  return seen.length;
}

export const tests = [
  browserTest('toy_page_fits_360_to_1920_with_both_panes_stacked_when_narrow', 240, PHONE, async (page, base) => {
    await page.goto(`${base}index.html?${SHIPPED}`);
    await waitState(page, (s) => s.models.length === 2 && s.models.every((m) => m.samplesStep >= 1), { what: 'samples of both models' });
    const notes = [];
    for (const w of WIDTHS) {
      await page.setViewportSize({ width: w, height: 800 });
      await settle(page);
      await noOverflow(page, `toy at ${w} px`);
      const b = await panes(page, ['scatter-a', 'scatter-b', 'curve-a', 'curve-b'], `toy at ${w} px`);
      const stacked = b['scatter-b'].top >= b['curve-a'].bottom;
      assert(stacked === (w < 700), `toy at ${w} px: panes ${stacked ? 'stacked' : 'side by side'}`);
      const open = await page.evaluate(() => document.getElementById('controls-box').open);
      assert(open === (w > 640), `toy at ${w} px: controls ${open ? 'open' : 'folded'}`);
      await shoot(page, `layout-toy-${w}.png`);
      notes.push(`${w}: ${Math.round(b['scatter-a'].width)} px canvas`);
    }
    return `(${notes.join(', ')})`;
  }),
  browserTest('image_mode_fits_360_to_1920_and_every_control_is_named', 240, PHONE, async (page, base) => {
    await page.goto(`${base}index.html?${SMALL_IMAGE}`);
    await waitState(page, (s) => s.mode === 'image' && s.model.gridDrawn, { what: 'image mode and its sample grid' });
    for (const w of WIDTHS) {
      await page.setViewportSize({ width: w, height: 800 });
      await settle(page);
      await noOverflow(page, `image mode at ${w} px`);
      await panes(page, ['img-data-grid', 'img-samples', 'img-curve'], `image mode at ${w} px`);
      await shoot(page, `layout-image-${w}.png`);
    }
    const stops = await tabThrough(page, 'image mode');
    return `(${stops} tab stops)`;
  }),
  browserTest('blog_embed_fits_360_to_1920_and_its_frame_follows_its_content', 240, TALL_PHONE, async (page, base) => {
    // The blog example as published, with a quicker sampler for SwiftShader.
    await page.route('**/blog-example.html', async (route) => {
      const res = await route.fetch();
      const html = (await res.text()).replaceAll('<cdl-demo ', '<cdl-demo samples="400" sampler="ddim" sampler_steps="40" ');
      await route.fulfill({ response: res, body: html });
    });
    await page.goto(`${base}blog-example.html`);
    await page.waitForFunction(() => document.querySelectorAll('cdl-demo iframe').length === 2);
    // In the blog's order, so frames[i] is the i-th <cdl-demo>'s iframe.
    const frames = await Promise.all((await page.$$('cdl-demo iframe')).map((h) => h.contentFrame()));
    assert(frames.length === 2, `two embedded demos, found ${frames.length}`);
    for (const f of frames) await waitState(f, (s) => s.models[0].samplesStep >= 1, { what: `samples in ${f.url()}` });
    const heights = [];
    for (const w of WIDTHS) {
      await page.setViewportSize({ width: w, height: 1600 });
      await settle(page);
      await noOverflow(page, `blog at ${w} px`);
      for (const [i, f] of frames.entries()) {
        await settle(f);
        const what = `embed ${i} at ${w} px`;
        await noOverflow(f, what);
        await panes(f, ['scatter-a', 'curve-a'], what);
        // The frame takes its content's height (body and margins), so nothing scrolls inside it.
        const frameEl = `document.querySelectorAll('cdl-demo iframe')[${i}]`;
        await page.waitForFunction(`(${FRAME_CONTENT})(${frameEl}) === ${frameEl}.clientHeight`, null, { timeout: 5000 })
          .catch(() => {});
        const m = await page.evaluate(`(() => {
          const el = ${frameEl}; const r = el.getBoundingClientRect(); const d = el.contentDocument;
          return { left: r.left, right: r.right, inner: innerWidth, frame: el.clientHeight, content: (${FRAME_CONTENT})(el),
            scroll: d.documentElement.scrollHeight, open: d.getElementById('controls-box').open,
            start: d.getElementById('start').checkVisibility() };
        })()`);
        assert(m.left >= 0 && m.right <= m.inner, `${what}: the frame fits the column: ${JSON.stringify(m)}`);
        assert(m.frame === m.content && m.scroll <= m.frame,
          `${what}: the frame is as tall as its content (frame ${m.frame} px, content ${m.content} px, scroll ${m.scroll} px)`);
        assert(!m.open && !m.start, `${what}: the controls are folded behind a disclosure`);
        heights.push(m.frame);
      }
      await shoot(page, `layout-embed-${w}.png`);
    }
    // Opening the controls makes the frame taller, and closing them shrinks it back.
    const f = frames[0];
    const el = await page.$('cdl-demo iframe');
    assert(await el.contentFrame() === f, 'the first frame');
    const before = await el.evaluate((el) => el.clientHeight);
    await f.click('#controls-box > summary');
    await page.waitForFunction(([el, h]) => el.clientHeight > h + 20, [el, before], { timeout: 5000 });
    assert(await f.isVisible('#start'), 'Start shows once the controls are open');
    await f.click('#controls-box > summary');
    await page.waitForFunction(([el, h]) => el.clientHeight === h, [el, before], { timeout: 5000 });
    return `(frame heights ${heights.join(', ')} px)`;
  }),
  browserTest('dark_scheme_darkens_the_page_and_the_embed', 120, { colorScheme: 'dark' }, async (page, base) => {
    const notes = [];
    for (const [what, url] of [['toy', `index.html?${tiny()}`], ['embed', `index.html?embed&${tiny({ loss_b: 'none' })}`],
      ['image mode', `index.html?${SMALL_IMAGE}`], ['blog', 'blog-example.html']]) {
      await page.goto(`${base}${url}`);
      const c = await page.evaluate(() => {
        const body = getComputedStyle(document.body);
        const button = document.querySelector('button') || document.body;
        return { bg: body.backgroundColor, fg: body.color, button: getComputedStyle(button).backgroundColor,
          buttonFg: getComputedStyle(button).color };
      });
      const [bg, fg, bbg, bfg] = [c.bg, c.fg, c.button, c.buttonFg].map(luminance);
      assert(bg !== null && bg < 0.05, `${what}: dark background (${c.bg})`);
      assert(fg !== null && fg > 0.5, `${what}: light text (${c.fg})`);
      // Chromium's own controls: rgb(239, 239, 239) buttons in the light scheme (0.86), rgb(107, 107, 107) in the dark.
      assert(bbg === null || bbg < 0.3, `${what}: dark controls (${c.button})`);
      assert(bfg !== null && bfg > 0.5, `${what}: light control text (${c.buttonFg})`);
      if (what === 'toy') {
        await waitState(page, () => true, { what: 'the demo to be ready' });
        await shoot(page, 'layout-toy-dark.png');
      }
      notes.push(`${what} ${c.bg}`);
    }
    return `(${notes.join(', ')})`;
  }),
  browserTest('keyboard_reaches_every_toy_control_with_a_name_and_a_focus_ring', 120, DESKTOP, async (page, base) => {
    await page.goto(`${base}index.html?${tiny()}`);
    await waitState(page, () => true, { what: 'the demo to be ready' });
    const stops = await tabThrough(page, 'toy mode');
    return `(${stops} tab stops)`;
  }),
  browserTest('copy_link_restores_the_toy_settings', 180, {}, async (page, base) => {
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(base).origin });
    await page.goto(`${base}index.html?${tiny()}`);
    await waitState(page, () => true, { what: 'the demo to be ready' });
    const want = { dataset: 'spirals', 'loss-a': 'itd', 'loss-b': 'ddpm', lambda: '0.5', anchors: '3', points: '4',
      sampler: 'ddim', 'sampler-steps': '7', heat: 'none' };
    for (const [id, v] of Object.entries(want)) await setControl(page, id, v);
    const href = await copyLink(page);
    const q = new URL(href).searchParams;
    const expect = { dataset: 'spirals', loss: 'itd', loss_b: 'ddpm', lambda: '0.5', K: '3', M: '4', sampler: 'ddim',
      sampler_steps: '7', heat: 'none', width: '16', pretrained: '0' };
    for (const [k, v] of Object.entries(expect)) assert(q.get(k) === v, `link ${k}=${q.get(k)}, want ${v}: ${href}`);
    await page.goto(href);
    const s = await waitState(page, (s) => s.models.length === 2, { what: 'the linked page to be ready' });
    assert(s.data.name === 'spirals', `data set restored: ${s.data.name}`);
    assert(s.models.map((m) => m.loss).join() === 'itd,ddpm', `losses restored: ${s.models.map((m) => m.loss)}`);
    for (const [id, v] of Object.entries(want)) {
      const got = await page.inputValue(`#${id}`);
      assert(got === v, `#${id} restored: ${got}, want ${v}`);
    }
    return `(${href.replace(base, '')})`;
  }),
  browserTest('copy_link_shows_the_link_when_the_clipboard_is_refused', 60, {}, async (page, base) => {
    // A browser that refuses the clipboard (no permission, an insecure page): the link is shown to copy by hand.
    await page.addInitScript(() => { Clipboard.prototype.writeText = () => Promise.reject(new DOMException('refused', 'NotAllowedError')); });
    await page.goto(`${base}index.html?${tiny()}`);
    await waitState(page, () => true, { what: 'the demo to be ready' });
    await setControl(page, 'dataset', 'draw');
    await page.click('#copy-link');
    await page.waitForFunction(() => document.body.dataset.linkCopied === 'no');
    const href = await page.getAttribute('#share-link', 'href');
    assert(await page.isVisible('#share-link') && href === (await page.textContent('#share-link')), `the link is shown: ${href}`);
    const msg = await page.textContent('#share-msg');
    assert(/^Copy this link/.test(msg) && /drawn or uploaded points are not in the link/.test(msg), `message: ${msg}`);
    assert(new URL(href).searchParams.get('dataset') === null, `no data set for drawn points: ${href}`);
    return `(${msg})`;
  }),
  browserTest('copy_link_restores_the_image_mode_settings', 180, {}, async (page, base) => {
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write'], { origin: new URL(base).origin });
    await page.goto(`${base}index.html?${SMALL_IMAGE}`);
    await waitState(page, (s) => s.mode === 'image', { what: 'image mode to be ready' });
    const want = { 'img-loss': 'ddpm', 'img-batch': '2', 'img-sampler': 'heun', 'img-sampler-steps': '5', 'img-lambda': '0.25' };
    for (const [id, v] of Object.entries(want)) await setControl(page, id, v);
    await setControl(page, 'img-clip', false);
    const href = await copyLink(page);
    const q = new URL(href).searchParams;
    const expect = { mode: 'image', loss: 'ddpm', batch: '2', sampler: 'heun', sampler_steps: '5', lambda: '0.25', clip: '0', ch: '8' };
    for (const [k, v] of Object.entries(expect)) assert(q.get(k) === v, `link ${k}=${q.get(k)}, want ${v}: ${href}`);
    await page.goto(href);
    await waitState(page, (s) => s.mode === 'image', { what: 'the linked image mode to be ready' });
    for (const [id, v] of Object.entries(want)) {
      const got = await page.inputValue(`#${id}`);
      assert(got === v, `#${id} restored: ${got}, want ${v}`);
    }
    assert(!(await page.isChecked('#img-clip')), 'clip x̂₀ restored (unticked)');
    return `(${href.replace(base, '')})`;
  }),
];
