// Runs every browser test (tests/browser/*.test.mjs, each exporting `tests`: [{ name, run }])
// against dist/ served on localhost, one at a time, and prints cargo-style lines so
// scripts/test counts them: `test <name> ... ok|FAILED` and `test result: ok. N passed; M failed`.
// Usage: node tests/browser/run.mjs [name-filter]

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { serve, dist } from './lib.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const filter = process.argv[2] || '';
if (!fs.existsSync(path.join(dist, 'index.html'))) {
  console.error(`no ${dist}/index.html: run \`trunk build --release\` first`);
  process.exit(2);
}
const files = fs.readdirSync(here).filter((f) => f.endsWith('.test.mjs')).sort();
const all = [];
for (const f of files) {
  const mod = await import(pathToFileURL(path.join(here, f)).href);
  for (const t of mod.tests) all.push({ ...t, name: `${f.replace('.test.mjs', '')}::${t.name}` });
}
const chosen = all.filter((t) => t.name.includes(filter));
const server = await serve();
console.log(`running ${chosen.length} browser tests against ${server.url} (${dist})`);
let passed = 0;
let failed = 0;
const failures = [];
for (const t of chosen) {
  const t0 = Date.now();
  try {
    const note = await Promise.race([
      t.run(server.url),
      new Promise((_, rej) => setTimeout(() => rej(new Error(`test took over ${t.timeout || 300} s`)), (t.timeout || 300) * 1000)),
    ]);
    passed++;
    console.log(`test ${t.name} ... ok (${((Date.now() - t0) / 1000).toFixed(1)} s)${note ? ` ${note}` : ''}`);
  } catch (e) {
    failed++;
    failures.push(t.name);
    console.log(`test ${t.name} ... FAILED (${((Date.now() - t0) / 1000).toFixed(1)} s)\n    ${String(e && e.stack || e).split('\n').join('\n    ')}`);
  }
}
await server.close();
if (failures.length) console.log(`\nfailures:\n    ${failures.join('\n    ')}`);
console.log(`\ntest result: ${failed ? 'FAILED' : 'ok'}. ${passed} passed; ${failed} failed`);
process.exit(failed ? 1 : 0);
