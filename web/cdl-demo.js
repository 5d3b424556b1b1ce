// <cdl-demo>: embeds the CDL browser demo in any page (a blog post, docs) as an iframe.
//
//   <script type="module" src="https://YOUR-HOST/cdl/cdl-demo.js"></script>
//   <cdl-demo dataset="moons" loss="cdl" autoplay></cdl-demo>
//
// Attributes (all optional): dataset (moons, spirals, checkerboard, 8gaussians, circles, dino),
// loss (ddpm, itd, cdl), autoplay, width, height (CSS size of the frame, default 360 x 520),
// and any URL parameter of the demo page (lambda, K, M, sampler, sampler_steps, samples, seed).
// The frame loads index.html?embed&... from the folder this script was served from, so the
// demo's files (wasm, shipped weights) come from the same static host.
const base = new URL('./index.html', import.meta.url);
const PASS = ['dataset', 'loss', 'lambda', 'K', 'M', 'sampler', 'sampler_steps', 'samples', 'seed', 'width', 'pretrained'];

class CdlDemo extends HTMLElement {
  connectedCallback() {
    if (this.firstChild) return;
    const url = new URL(base);
    url.searchParams.set('embed', '1');
    for (const name of PASS) {
      const v = this.getAttribute(name === 'width' ? 'model-width' : name);
      if (v !== null) url.searchParams.set(name, v);
    }
    if (this.hasAttribute('autoplay')) url.searchParams.set('autoplay', '1');
    const frame = document.createElement('iframe');
    frame.src = url.href;
    frame.title = `CDL demo: ${this.getAttribute('dataset') || 'moons'} with the ${this.getAttribute('loss') || 'cdl'} loss`;
    frame.loading = 'lazy';
    frame.style.border = '1px solid #ddd';
    frame.style.borderRadius = '6px';
    frame.style.width = this.getAttribute('width') || '360px';
    frame.style.height = this.getAttribute('height') || '520px';
    this.appendChild(frame);
  }
}

if (!customElements.get('cdl-demo')) customElements.define('cdl-demo', CdlDemo);
