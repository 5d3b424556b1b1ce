// The page's layout glue beside the wasm (which owns training and drawing): the controls folded
// on narrow screens and in the embed, the embed's height posted to the page around it
// (web/cdl-demo.js), and "Copy link" (the data-param controls of index.html written into a URL).
(() => {
  const query = new URLSearchParams(location.search);
  const embed = query.has('embed');
  const image = query.get('mode') === 'image';
  const byId = (id) => document.getElementById(id);

  // -------------------------------------------------------------------------------------------
  // Layout: the embed shows its model first and its controls folded under it; a phone shows
  // the panes under one "Controls" line instead of a screenful of fieldsets. The fold follows
  // the width (a rotated phone, a resized window) until the reader opens or closes it. The embed
  // class is set here, before the wasm loads, so the frame does not start in the full layout.
  if (embed) document.body.classList.add('embed');
  // Image mode shows its own section from the first paint (the wasm sets the class too), so a
  // reader never sees the toy demo's controls first, and an early Start is the image Start.
  if (image) document.body.classList.add('image-mode');
  const narrow = matchMedia('(max-width: 40rem)');
  for (const id of ['controls-box', 'img-controls-box']) {
    const box = byId(id);
    if (!box) continue;
    let chosen = false;
    box.querySelector('summary').addEventListener('click', () => { chosen = true; });
    const fold = () => { if (!chosen) box.open = !embed && !narrow.matches; };
    narrow.addEventListener('change', fold);
    fold();
  }

  // -------------------------------------------------------------------------------------------
  // Embed sizing: the frame's content height goes to the parent page, which sizes the iframe
  // (no fixed height needed). The body's height, not the document's, so the frame can shrink.
  if (embed && window.parent !== window) {
    let last = 0;
    const post = () => {
      const style = getComputedStyle(document.body);
      const height = Math.ceil(document.body.getBoundingClientRect().height
        + parseFloat(style.marginTop) + parseFloat(style.marginBottom));
      if (height === last) return;
      last = height;
      window.parent.postMessage({ cdlDemoHeight: height }, '*');
    };
    new ResizeObserver(post).observe(document.body);
    post();
  }

  // -------------------------------------------------------------------------------------------
  // Copy link: the current URL with every data-param control of this mode written into it.
  const linkFromControls = () => {
    const url = new URL(location.href);
    url.hash = '';
    const notes = [];
    const scope = byId(image ? 'image-demo' : 'demo');
    for (const el of scope.querySelectorAll('[data-param]')) {
      const name = el.dataset.param;
      if (el.type === 'checkbox') {
        url.searchParams.set(name, el.checked ? '1' : '0');
      } else if (el.tagName === 'SELECT' && el.selectedOptions[0] && 'noLink' in el.selectedOptions[0].dataset) {
        // Drawn points and CSV files are not in a link: it keeps the data set it was opened with.
        notes.push('drawn or uploaded points are not in the link');
      } else if (el.value.trim() !== '') {
        url.searchParams.set(name, el.value.trim());
      }
    }
    return { href: url.href, notes };
  };

  const button = byId('copy-link');
  if (button) {
    button.addEventListener('click', async () => {
      const { href, notes } = linkFromControls();
      const link = byId('share-link');
      link.href = href;
      link.textContent = href;
      link.hidden = false;
      let copied = false;
      try {
        await navigator.clipboard.writeText(href);
        copied = true;
      } catch {
        // No clipboard API, or the browser refused it: the link is shown to copy by hand.
      }
      const said = copied ? 'Link copied:' : 'Copy this link (the browser did not allow the clipboard):';
      byId('share-msg').textContent = [said, ...notes.map((n) => `(${n})`)].join(' ');
      document.body.dataset.linkCopied = copied ? 'yes' : 'no';
    });
  }
})();
