// A small Markdown renderer that builds DOM nodes and never HTML: every piece of model text ends up
// in a text node (textContent), so `<script>` or `<img onerror=...>` in an answer is shown as
// text, never run. Covers what chat models write: paragraphs, headings, lists, fenced and inline
// code, bold, italic and links (http, https and mailto only; others are shown as text).
"use strict";

const Markdown = (() => {
  const SAFE_URL = /^(https?:|mailto:)/i;

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Inline spans: `code`, **bold**, *italic* / _italic_, [text](url).
  const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*([^*]+)\*\*|__([^_]+)__|\*([^*\s][^*]*)\*|_([^_\s][^_]*)_|\[([^\]]+)\]\(([^)\s]+)\)/g;

  function inline(parent, text) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      if (m[2] !== undefined) parent.appendChild(el("code", "", m[2]));
      else if (m[3] !== undefined || m[4] !== undefined) inline(parent.appendChild(el("strong")), m[3] ?? m[4]);
      else if (m[5] !== undefined || m[6] !== undefined) inline(parent.appendChild(el("em")), m[5] ?? m[6]);
      else if (SAFE_URL.test(m[8])) {
        const a = el("a", "", m[7]);
        a.href = m[8];
        a.rel = "noopener noreferrer";
        a.target = "_blank";
        parent.appendChild(a);
      } else parent.appendChild(document.createTextNode(m[0]));
      last = m.index + m[0].length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function render(source) {
    const root = el("div", "md");
    const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
    let para = null;
    let list = null;
    const endBlocks = () => { para = null; list = null; };
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i];
      const fence = line.match(/^\s*(```+|~~~+)\s*([\w+-]*)/);
      if (fence) {
        endBlocks();
        const body = [];
        i++;
        while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
        const pre = root.appendChild(el("pre"));
        const code = pre.appendChild(el("code", fence[2] ? `language-${fence[2]}` : "", body.join("\n")));
        if (fence[2]) code.dataset.lang = fence[2];
        continue;
      }
      if (!line.trim()) { endBlocks(); continue; }
      const heading = line.match(/^(#{1,6})\s+(.*)$/);
      if (heading) {
        endBlocks();
        inline(root.appendChild(el(`h${Math.min(6, heading[1].length + 2)}`)), heading[2]);
        continue;
      }
      const item = line.match(/^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/);
      if (item) {
        para = null;
        const ordered = /\d/.test(item[1]);
        if (!list || (list.tagName === "OL") !== ordered) list = root.appendChild(el(ordered ? "ol" : "ul"));
        inline(list.appendChild(el("li")), item[2]);
        continue;
      }
      if (list && /^\s+/.test(line) && list.lastChild) {  // a list item's continued line
        list.lastChild.appendChild(document.createTextNode(" "));
        inline(list.lastChild, line.trim());
        continue;
      }
      list = null;
      if (!para) para = root.appendChild(el("p"));
      else para.appendChild(el("br"));
      inline(para, line);
    }
    return root;
  }

  return { render };
})();
