// MathJax 3 configuration, loaded before MathJax itself (mkdocs.yml, extra_javascript).
// Markdown pages and docstrings: pymdownx.arithmatex (generic mode) wraps math in
// `.arithmatex` elements as \( \) and \[ \]; nothing else is typeset, so a `$` in prose is
// never taken for math. Notebook pages (mkdocs-jupyter): the Markdown cells keep their $ and $$
// delimiters, so the whole page is typeset (code cells and outputs are <pre>, always skipped).
const notebookPage = document.querySelector(".jp-Notebook") !== null;

window.MathJax = {
  tex: {
    inlineMath: notebookPage ? [["$", "$"], ["\\(", "\\)"]] : [["\\(", "\\)"]],
    displayMath: notebookPage ? [["$$", "$$"], ["\\[", "\\]"]] : [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: notebookPage ? "tex2jax_ignore" : ".*|",
    processHtmlClass: "arithmatex",
  },
};

// With Material's instant navigation a new page arrives without a reload: typeset it.
document$.subscribe(() => {
  if (!window.MathJax.typesetPromise) return;  // not loaded yet: it typesets on load
  MathJax.typesetClear();
  MathJax.texReset();
  MathJax.typesetPromise();
});
