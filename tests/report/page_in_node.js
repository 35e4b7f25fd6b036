// Runs a built report's page script in Node with a minimal stand-in DOM (no browser needed), opens one view
// (a location hash) and prints what the page shows: the grid's cards and the side-by-side candidates, as JSON.
//
//     node page_in_node.js REPORT_DIR "compare=1&fate=kept"
"use strict";
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const [reportDir, hash] = process.argv.slice(2);
const page = fs.readFileSync(path.join(reportDir, "index.html"), "utf8");

class Node {
  constructor(tag) {
    Object.assign(this, { tagName: tag, className: "", children: [], dataset: {}, hidden: false, value: "",
                          _text: "" });
  }
  get textContent() { return this._text + this.children.map((c) => c.textContent).join(""); }
  set textContent(text) { this._text = String(text); this.children = []; }
  append(...nodes) { this.children.push(...nodes); }
  appendChild(node) { this.children.push(node); if (node.src && this === documentHead) load(node); return node; }
  replaceChildren(...nodes) { this.children = nodes; this._text = ""; }
  replaceChild(fresh, old) { this.children[this.children.indexOf(old)] = fresh; }
  scrollIntoView() {}
  find(test) {
    const found = [];
    for (const child of this.children) {
      if (typeof child === "object" && test(child)) found.push(child);
      if (child.children) found.push(...child.find(test));
    }
    return found;
  }
}
const elements = {};
for (const match of page.matchAll(/<(\w+)[^>]*\bid="([\w-]+)"([^>]*)>/g)) {
  elements[match[2]] = new Node(match[1]);
  if (/\bhidden\b/.test(match[0])) elements[match[2]].hidden = true;
}
const documentHead = new Node("head");
const listeners = {};
const location = { _hash: hash ? "#" + hash : "" };
Object.defineProperty(location, "hash", {
  get() { return this._hash; },
  set(value) { this._hash = "#" + String(value).replace(/^#/, ""); setImmediate(() => listeners.hashchange()); },
});
const document = {
  getElementById: (id) => elements[id] || null,
  createElement: (tag) => new Node(tag),
  createTextNode: (text) => ({ textContent: String(text) }),
  head: documentHead,
};
const context = vm.createContext({ document, location, URLSearchParams, performance: { mark() {} }, setImmediate,
                                   addEventListener: (name, fn) => { listeners[name] = fn; } });
context.window = context;  // the data files and the script set and read globals through `window`
function load(script) {
  setImmediate(() => {
    const file = path.join(reportDir, script.src);
    if (!fs.existsSync(file)) { script.onerror(); return; }
    vm.runInContext(fs.readFileSync(file, "utf8"), context);
  });
}
vm.runInContext(fs.readFileSync(path.join(reportDir, "data", "index.js"), "utf8"), context);
const script = page.match(/<script>([\s\S]*)<\/script>\s*<\/body>/)[1];
vm.runInContext(script, context);

function settle(rounds) {
  return new Promise((resolve) => {
    const step = (n) => (n ? setImmediate(() => step(n - 1)) : resolve());
    step(rounds);
  });
}
settle(50).then(() => {
  const cards = (box) => box.find((n) => n.tagName === "article").map((card) => ({
    id: card.dataset.id,
    candidate: card.dataset.candidate,
    className: card.className,
    images: card.find((n) => n.tagName === "img").map((img) => path.basename(img.src)),
    text: card.textContent,
  }));
  const request = elements.request;
  console.log(JSON.stringify({
    view: elements.grid.dataset.view,
    problem: elements.problem.textContent,
    grid: cards(elements.grid),
    request: request ? { hidden: request.hidden, text: request.textContent, cards: cards(request),
                         images: request.find((n) => n.tagName === "img").map((img) => path.basename(img.src)) } : null,
    fateOptions: elements.fate ? elements.fate.children.map((o) => o.value) : null,
  }));
});
