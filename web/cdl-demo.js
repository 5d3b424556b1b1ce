// <cdl-demo>: embeds the CDL browser demo in any page (a blog post, docs) as an iframe.
//
//   <script type="module" src="https://YOUR-HOST/cdl/cdl-demo.js"></script>
//   <cdl-demo dataset="moons" loss="cdl" autoplay></cdl-demo>
//
// Attributes (all optional): dataset (moons, spirals, checkerboard, 8gaussians, circles, dino),
// loss (ddpm, itd, cdl), autoplay, width (CSS width of the frame, default 360px, never wider than
// the column), height (a fixed CSS height; without it the frame follows its content, which the
// demo posts as it changes), and any URL parameter of the demo page (lambda, K, M, sampler,
// sampler_steps, samples, seed). The frame loads index.html?embed&... from the folder this
// script was served from, so the demo's files (wasm, shipped weights) come from the same host.
const base = new URL('./index.html', import.meta.url);
const PASS = ['dataset', 'loss', 'lambda', 'K', 'M', 'sampler', 'sampler_steps', 'samples', 'seed', 'width', 'pretrained'];
/// Height of a frame before its content says how tall it is.
const FIRST_HEIGHT = '460px';

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
    frame.style.display = 'block';
    frame.style.border = '1px solid #8884';
    frame.style.borderRadius = '6px';
    frame.style.boxSizing = 'border-box';
    frame.style.width = this.getAttribute('width') || '360px';
    frame.style.maxWidth = '100%';
    frame.style.height = this.getAttribute('height') || FIRST_HEIGHT;
    frame.dataset.autoHeight = this.hasAttribute('height') ? 'no' : 'yes';
    this.appendChild(frame);
  }
}

// The demo in a frame posts { cdlDemoHeight } whenever its content's height changes (web/page.js);
// the frame it came from takes that height plus its own border.
window.addEventListener('message', (e) => {
  if (e.origin !== base.origin || !e.data || typeof e.data.cdlDemoHeight !== 'number') return;
  for (const frame of document.querySelectorAll('cdl-demo iframe')) {
    if (frame.contentWindow !== e.source || frame.dataset.autoHeight !== 'yes') continue;
    const border = frame.offsetHeight - frame.clientHeight;
    frame.style.height = `${Math.max(40, Math.ceil(e.data.cdlDemoHeight) + border)}px`;
  }
});

if (!customElements.get('cdl-demo')) customElements.define('cdl-demo', CdlDemo);
