// The page's layout glue beside the wasm (which owns training and drawing): the controls folded
// on narrow screens and in the embed, and the embed's height posted to the page around it
// (web/cdl-demo.js).
(() => {
  const query = new URLSearchParams(location.search);
  const embed = query.has('embed');
  const byId = (id) => document.getElementById(id);

  // -------------------------------------------------------------------------------------------
  // Layout: the embed shows its model first and its controls folded under it; a phone shows
  // the panes under one "Controls" line instead of a screenful of fieldsets. The fold follows
  // the width (a rotated phone, a resized window) until the reader opens or closes it. The embed
  // class is set here, before the wasm loads, so the frame does not start in the full layout.
  if (embed) document.body.classList.add('embed');
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
})();
