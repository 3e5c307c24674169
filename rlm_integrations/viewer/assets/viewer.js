// rlm view: draws the trajectory embedded in this page as JSON.
// Text from the trajectory is model- and code-written, so it only ever reaches the page
// through textContent and text nodes, never as markup. Nodes are built when first opened,
// and a run's iterations are added a page at a time, so very long runs stay responsive.
(function () {
  "use strict";

  var DATA = JSON.parse(document.getElementById("rlm-data").textContent);
  var PAGE = 100; // iterations added to a run's list at a time
  var OPEN_ITERATIONS_UP_TO = 8; // a run with at most this many iterations shows them opened
  var MAX_LANES = 400; // timeline rows (one per run)

  // ---- small helpers --------------------------------------------------------------------
  function h(tag, attrs) {
    var el = document.createElement(tag);
    if (attrs) {
      for (var name in attrs) {
        var value = attrs[name];
        if (value === null || value === undefined || value === false) continue;
        if (name === "class") el.className = value;
        else if (name === "text") el.textContent = value;
        else el.setAttribute(name, value === true ? "" : value);
      }
    }
    for (var i = 2; i < arguments.length; i++) append(el, arguments[i]);
    return el;
  }
  function append(el, child) {
    if (child === null || child === undefined || child === false) return;
    if (Array.isArray(child)) { child.forEach(function (c) { append(el, c); }); return; }
    el.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  function key() { return Array.prototype.join.call(arguments, "\u241f"); }
  var INT = new Intl.NumberFormat("en-US"); // toLocaleString builds a formatter per call: slow on 5,000 rows
  function fmtInt(n) { return INT.format(n || 0); }
  function fmtDur(s) {
    if (s === null || s === undefined || isNaN(s)) return "\u2013";
    if (s < 0.001) return (s * 1000).toFixed(s < 0.0001 ? 3 : 2) + " ms";
    if (s < 1) return (s * 1000).toFixed(s < 0.01 ? 1 : 0) + " ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + " s";
    var m = Math.floor(s / 60);
    return m + " min " + Math.round(s - m * 60) + " s";
  }
  function fmtUsd(x) {
    if (x === 0) return "$0";
    if (x < 0.0001) return "$" + x.toExponential(1);
    if (x < 1) return "$" + x.toFixed(4);
    return "$" + x.toFixed(2);
  }
  function fmtCost(u) {
    if (!u || !u.calls) return "\u2013";
    if (u.cost === null) return "cost unknown";
    return fmtUsd(u.cost) + (u.unknown ? " + unknown" : "");
  }
  function fmtTok(u) { return u && u.calls ? fmtInt(u.p + u.c) + " tok" : ""; }
  function tokTitle(u) {
    if (!u || !u.calls) return "no model calls";
    return fmtInt(u.p) + " prompt + " + fmtInt(u.c) + " completion tokens in " + fmtInt(u.calls) +
      " call" + (u.calls === 1 ? "" : "s") + (u.unknown ? "; " + u.unknown + " with an unknown price" : "");
  }
  function metaOf(duration, usage) {
    var parts = [fmtDur(duration)];
    var tok = fmtTok(usage);
    if (tok) { parts.push(tok); parts.push(fmtCost(usage)); }
    return h("span", { class: "meta", title: tokTitle(usage) }, parts.join(" \u00b7 "));
  }
  function oneLine(text, max) {
    var s = String(text || "").replace(/\s+/g, " ").trim();
    return s.length > max ? s.slice(0, max - 1) + "\u2026" : s;
  }
  function show(value) {
    if (value === null || value === undefined) return "None";
    return typeof value === "string" ? value : JSON.stringify(value, null, 2);
  }
  function cachedTag() {
    return h("span", { class: "tag cached", title: "replayed from the call cache: no model call, nothing spent" }, "cached");
  }
  function statusTag(status, limit) {
    return h("span", { class: "status " + status, title: limit ? "stopped by " + limit : null },
      status.replace(/_/g, " ") + (limit ? " (" + limit + ")" : ""));
  }

  // ---- Python highlighting (a small tokenizer; enough for LM-written cells) ----------------
  var PY = new RegExp([
    "(#[^\\n]*)",
    "((?:\\b[rRbBuUfF]{1,2})?(?:\"\"\"[\\s\\S]*?(?:\"\"\"|$)|'''[\\s\\S]*?(?:'''|$)|\"(?:[^\"\\\\\\n]|\\\\.)*\"?|'(?:[^'\\\\\\n]|\\\\.)*'?))",
    "(\\b(?:0[xXoObB][\\da-fA-F_]+|\\d[\\d_]*\\.?[\\d_]*(?:[eE][+-]?\\d+)?j?)\\b)",
    "(\\b(?:False|None|True|and|as|assert|async|await|break|class|continue|def|del|elif|else|except|finally|for|from|global|if|import|in|is|lambda|nonlocal|not|or|pass|raise|return|try|while|with|yield)\\b)",
    "(\\b(?:llm_query_batched|llm_query|rlm_query_batched|rlm_query|FINAL_VAR|FINAL|context)\\b)",
    "(\\b(?:print|len|range|enumerate|zip|sorted|sum|min|max|str|int|float|bool|list|dict|set|tuple|isinstance|any|all|map|filter|repr|abs|round|reversed|type|object|Exception)\\b)",
    "([A-Za-z_]\\w*(?=\\s*\\())"
  ].join("|"), "g");
  var TOKEN_CLASSES = [null, "t-com", "t-str", "t-num", "t-kw", "t-rlm", "t-bi", "t-fn"];
  function highlight(code) {
    var frag = document.createDocumentFragment();
    var last = 0;
    var match;
    PY.lastIndex = 0;
    while ((match = PY.exec(code)) !== null) {
      if (match[0] === "") { PY.lastIndex++; continue; }
      if (match.index > last) frag.appendChild(document.createTextNode(code.slice(last, match.index)));
      var group = 1;
      while (match[group] === undefined) group++;
      frag.appendChild(h("span", { class: TOKEN_CLASSES[group] }, match[0]));
      last = match.index + match[0].length;
    }
    if (last < code.length) frag.appendChild(document.createTextNode(code.slice(last)));
    return frag;
  }
  function codeBlock(code, field) {
    return h("pre", { class: "code", "data-f": field }, h("code", null, highlight(code)));
  }
  // A model reply: prose and fenced code blocks. A block that ran as a cell is shown once,
  // with the cell, and the reply keeps a pointer to it.
  function splitReply(text) {
    var parts = [];
    var fence = /```([\w+-]*)[^\n]*\n([\s\S]*?)(?:```|$)/g;
    var last = 0;
    var match;
    while ((match = fence.exec(text)) !== null) {
      var prose = text.slice(last, match.index).trim();
      if (prose) parts.push({ prose: prose });
      parts.push({ lang: match[1].toLowerCase(), code: match[2].replace(/\n$/, "") });
      last = match.index + match[0].length;
    }
    var rest = text.slice(last).trim();
    if (rest) parts.push({ prose: rest });
    return parts;
  }
  function cellCodes(it) {
    var codes = new Map();
    it.cells.forEach(function (cell) { codes.set(cell.code.trim(), cell.id); });
    return codes;
  }
  function replySearchText(text, codes) {
    return splitReply(text).map(function (p) { return p.prose !== undefined ? p.prose : (codes.has(p.code.trim()) ? "" : p.code); }).join("\n");
  }
  function replyBlock(text, field, codes) {
    var box = h("div", { class: "reply", "data-f": field });
    splitReply(text).forEach(function (p) {
      if (p.prose !== undefined) { box.appendChild(h("div", { class: "prose" }, p.prose)); return; }
      var ran = codes.get(p.code.trim());
      if (ran) { box.appendChild(h("div", { class: "ran" }, "\u2193 code block: runs below as " + ran)); return; }
      box.appendChild(p.lang === "" || p.lang === "repl" || p.lang === "python" || p.lang === "python3" || p.lang === "py"
        ? h("pre", { class: "code" }, h("code", null, highlight(p.code)))
        : h("pre", { class: "code" }, p.code));
    });
    if (!box.firstChild) box.appendChild(h("span", { class: "empty-note" }, "(empty reply)"));
    return box;
  }
  function outBlock(kind, label, text, field) {
    return h("div", { class: "out " + kind }, h("div", { class: "k" }, label), h("pre", { "data-f": field }, text));
  }

  // ---- indexes over the data ---------------------------------------------------------------
  var RUNS = new Map();
  var iterOfCell = new Map(); // run id + cell id -> iteration number
  var iterLoc = new Map(); // iteration node key -> [run, index in run.iterations]
  var latest = 0;
  DATA.runs.forEach(function (run) {
    RUNS.set(run.id, run);
    run.iterations.forEach(function (it, index) {
      iterLoc.set(key("i", run.id, it.n), [run, index]);
      it.cells.forEach(function (cell) { iterOfCell.set(key(run.id, cell.id), it.n); });
      latest = Math.max(latest, it.t1 || it.t0 || 0);
    });
    latest = Math.max(latest, run.t1 || run.t0 || 0);
  });
  DATA.runs.forEach(function (run) {
    if (run.t1 === null) run.t1End = latest; else run.t1End = run.t1;
  });
  var ROOTS = DATA.runs.filter(function (run) { return !run.parent || !RUNS.has(run.parent); });
  function childRuns(run) {
    return run.children.map(function (id) { return RUNS.get(id); }).filter(Boolean);
  }
  function iterationOf(run, cellId) { return iterOfCell.get(key(run.id, cellId)); }
  // The keys of the nodes to open, outermost first, to show run `runId`.
  function runChain(runId) {
    var run = RUNS.get(runId);
    var chain = [key("r", runId)];
    var guard = 0;
    while (run && run.parent && RUNS.has(run.parent) && guard++ < 1000) {
      var parent = RUNS.get(run.parent);
      var n = run.parentCell ? iterationOf(parent, run.parentCell) : undefined;
      if (n === undefined) n = iterationOfSub(parent, run.parentCall);
      if (n !== undefined) chain.unshift(key("i", parent.id, n));
      chain.unshift(key("r", parent.id));
      run = parent;
    }
    return chain;
  }
  function iterationOfSub(run, callId) {
    for (var i = 0; i < run.iterations.length; i++) {
      var it = run.iterations[i];
      if (it.subs.some(function (s) { return s.id === callId; })) return it.n;
    }
    return undefined;
  }

  // ---- the tree: nodes are filled when first opened -------------------------------------------
  var tree = document.getElementById("tree");
  var nodes = new Map(); // key -> record
  var pagers = new Map(); // run id -> pager
  var focused = null; // the focused row's header

  function node(nodeKey, cls, head, fill, open) {
    var hd = h("div", { class: "hd", tabindex: "-1" }, h("span", { class: "tw", "aria-hidden": "true" }), head);
    var bd = h("div", { class: "bd", role: "group", hidden: true });
    var el = h("div", { class: "node " + cls, role: "treeitem", "aria-expanded": "false", "data-key": nodeKey }, hd, bd);
    var rec = { key: nodeKey, el: el, hd: hd, bd: bd, fill: fill, filled: false, open: false };
    nodes.set(nodeKey, rec);
    hd._rec = rec;
    if (open) setOpen(rec, true);
    return el;
  }
  function setOpen(rec, open) {
    if (open && !rec.filled) {
      rec.filled = true;
      rec.fill(rec.bd);
      if (search.query) markIn(rec.bd);
    }
    rec.open = open;
    rec.bd.hidden = !open;
    rec.el.setAttribute("aria-expanded", open ? "true" : "false");
  }

  function runNode(run) {
    var head = [];
    if (run.depth > 0) head.push(h("span", { class: "tag depth", title: "recursion depth" }, "depth " + run.depth));
    if (run.parent) head.push(h("span", { class: "tag fn" }, "rlm_query"));
    head.push(h("span", { class: "label", title: run.query, "data-f": key("q", run.id) }, oneLine(run.query, 160) || run.id));
    head.push(statusTag(run.status, run.limit));
    var turns = run.iterations.filter(function (it) { return it.n > 0; }).length;
    head.push(h("span", { class: "tag" }, turns + " iteration" + (turns === 1 ? "" : "s")));
    if (run.children.length) head.push(h("span", { class: "tag" }, run.children.length + " child run" + (run.children.length === 1 ? "" : "s")));
    head.push(metaOf(run.duration !== null ? run.duration : run.t1End - run.t0, run.total));
    var isRoot = ROOTS.indexOf(run) >= 0;
    var el = node(key("r", run.id), "run" + (isRoot ? " root" : " child"), head, function (bd) { fillRun(bd, run); }, isRoot);
    el.setAttribute("data-depth", String(run.depth));
    return el;
  }

  function fillRun(bd, run) {
    var info = h("div", { class: "info" });
    function row(k, v) { info.appendChild(h("div", { class: "k" }, k)); info.appendChild(h("div", { class: "v" }, v)); }
    row("run", h("span", null, h("span", { class: "mono" }, run.id),
      run.parent ? " \u00b7 child of " + run.parent + " (from " + (run.parentCell || "?") + ")" : "",
      " \u00b7 " + run.model + (run.subModel && run.subModel !== run.model ? ", sub-calls to " + run.subModel : "")));
    if (run.query.length > 160 || run.query.indexOf("\n") >= 0) row("query", h("pre", { "data-f": key("qf", run.id) }, run.query));
    if (run.context) {
      var c = run.context;
      var desc = c.type + ", " + fmtInt(c.chars) + " characters" + (c.items !== null && c.items !== undefined ? ", " + fmtInt(c.items) + " items" : "") +
        (c.sha256 ? ", sha256 " + c.sha256.slice(0, 12) + "\u2026" : "");
      row("context", c.preview
        ? h("details", null, h("summary", null, desc), h("pre", { class: "code", "data-f": key("x", run.id) }, c.preview))
        : desc);
    } else {
      row("context", h("span", { class: "empty-note" }, "none"));
    }
    if (run.finished) row("answer", h("pre", { "data-f": key("a", run.id) }, show(run.answer)));
    else row("answer", h("span", { class: "empty-note" }, "none yet: the run did not finish in this file"));
    var usage = (fmtTok(run.own) || "no model calls") + (run.own.calls ? " \u00b7 " + fmtCost(run.own) + " \u00b7 " + run.own.calls + " calls" : "");
    if (run.children.length) usage += "; with its child runs " + fmtTok(run.total) + " \u00b7 " + fmtCost(run.total) + " \u00b7 " + run.total.calls + " calls";
    row("usage", h("span", { title: tokTitle(run.total) }, usage));
    bd.appendChild(info);
    var list = h("div", { class: "iters" });
    var more = h("button", { class: "more", type: "button" });
    bd.appendChild(list);
    bd.appendChild(more);
    var pager = { run: run, list: list, more: more, loaded: 0 };
    pagers.set(run.id, pager);
    more.addEventListener("click", function () { loadMore(pager, 0); });
    loadMore(pager, 0);
    if (window.IntersectionObserver) {
      var watcher = new IntersectionObserver(function (entries) {
        if (entries.some(function (e) { return e.isIntersecting; }) && pager.loaded < run.iterations.length) loadMore(pager, 0);
      }, { rootMargin: "600px" });
      watcher.observe(more);
    }
  }

  function loadMore(pager, upTo) {
    var run = pager.run;
    var end = Math.min(run.iterations.length, Math.max(pager.loaded + PAGE, upTo + 1));
    if (end <= pager.loaded) return;
    var frag = document.createDocumentFragment();
    var openAll = run.iterations.length <= OPEN_ITERATIONS_UP_TO;
    for (var i = pager.loaded; i < end; i++) frag.appendChild(iterationNode(run, run.iterations[i], openAll));
    pager.list.appendChild(frag);
    pager.loaded = end;
    var left = run.iterations.length - end;
    pager.more.hidden = left <= 0;
    pager.more.textContent = "Show " + Math.min(PAGE, left) + " more iterations (" + fmtInt(left) + " left)";
    if (search.query) markIn(pager.list);
  }

  function snippet(it) {
    var text = it.calls.length ? it.calls[0].text || "" : "";
    var prose = text.replace(/```[\s\S]*?(```|$)/g, " ").trim();
    if (prose) return oneLine(prose, 140);
    if (it.cells.length) return oneLine(it.cells[0].code, 140);
    return oneLine(text, 140);
  }

  function iterationNode(run, it, open) {
    var errors = 0, finals = 0, subs = 0, children = 0;
    it.cells.forEach(function (cell) {
      if (cell.error !== null) errors++;
      if (cell.final) finals++;
      cell.subs.forEach(function (s) { if (s.child) children++; else subs++; });
    });
    it.subs.forEach(function (s) { if (s.child) children++; else subs++; });
    var callErrors = it.calls.filter(function (c) { return c.error; }).length;
    var closing = it.calls.some(function (c) { return c.purpose === "final_answer"; });
    var head = [
      h("span", { class: "n", title: it.n === 0 ? "the first step the loop ran for a small model, before its first turn" : null }, it.n === 0 ? "first step" : "#" + it.n),
      h("span", { class: "label" }, snippet(it)),
      it.cells.length ? h("span", { class: "tag" }, it.cells.length + " cell" + (it.cells.length === 1 ? "" : "s")) : null,
      errors + callErrors ? h("span", { class: "tag err" }, (errors + callErrors) + " error" + (errors + callErrors === 1 ? "" : "s")) : null,
      subs ? h("span", { class: "tag" }, subs + " sub-call" + (subs === 1 ? "" : "s")) : null,
      children ? h("span", { class: "tag depth" }, children + " child run" + (children === 1 ? "" : "s")) : null,
      closing ? h("span", { class: "tag" }, "closing request") : null,
      finals ? h("span", { class: "tag fin" }, "FINAL") : null,
      metaOf(it.duration !== null ? it.duration : (it.t1 !== null ? it.t1 - it.t0 : null), it.total)
    ];
    return node(key("i", run.id, it.n), "iter", head, function (bd) { fillIteration(bd, run, it); }, open);
  }

  function fillIteration(bd, run, it) {
    var codes = cellCodes(it);
    it.calls.forEach(function (call) { bd.appendChild(callBlock(run, call, codes)); });
    it.cells.forEach(function (cell, index) { bd.appendChild(cellBlock(run, cell, index, it.cells.length)); });
    if (it.subs.length) {
      var box = h("div", { class: "block" }, h("div", { class: "bh" }, h("span", { class: "kind sub" }, "Sub-calls outside a cell")));
      it.subs.forEach(function (sub) { box.appendChild(subNode(run, sub)); });
      bd.appendChild(box);
    }
    if (!it.calls.length && !it.cells.length && !it.subs.length) bd.appendChild(h("div", { class: "empty-note" }, "nothing recorded for this iteration"));
  }

  function callBlock(run, call, codes) {
    var box = h("div", { class: "block" });
    var usage = call.usage;
    box.appendChild(h("div", { class: "bh" },
      h("span", { class: "kind lm" }, call.purpose === "final_answer" ? "Closing request to the root model" : "Root model"),
      h("b", null, call.model),
      call.cached ? cachedTag() : null,
      h("span", null, fmtDur(call.duration)),
      usage ? h("span", { title: tokTitle(usage) }, fmtInt(usage.p) + " \u2192 " + fmtInt(usage.c) + " tok") : null,
      usage ? h("span", null, fmtCost(usage)) : null));
    if (call.messages && call.messages.length) {
      box.appendChild(node(key("m", run.id, call.id), "msgs",
        h("span", { class: "label" }, "Sent: " + call.messages.length + " new message" + (call.messages.length === 1 ? "" : "s") +
          " (" + call.messages.map(function (m) { return m.role; }).join(", ") + ")"),
        function (inner) {
          call.messages.forEach(function (m, i) {
            var text = m.prompt !== undefined ? DATA.prompts[m.prompt] : m.content;
            inner.appendChild(h("div", { class: "msg" }, h("div", { class: "role" }, m.role),
              h("pre", { class: "code", "data-f": key("p", run.id, call.id, i) }, text)));
          });
        }, false));
    }
    if (call.error) box.appendChild(outBlock("err", "model error", call.error, key("ce", run.id, call.id)));
    else if (call.t1 === null) box.appendChild(h("div", { class: "empty-note" }, "no reply recorded (the run was cut off)"));
    else box.appendChild(replyBlock(call.text, key("t", run.id, call.id), codes));
    return box;
  }

  function cellBlock(run, cell, index, count) {
    var box = h("div", { class: "block cell", "data-cell": cell.id });
    var flags = [];
    if (cell.final) flags.push(h("span", { class: "tag fin" }, "FINAL"));
    if (cell.timedOut) flags.push(h("span", { class: "tag err" }, "timed out"));
    if (cell.restarted) flags.push(h("span", { class: "tag err" }, "worker restarted"));
    box.appendChild(h("div", { class: "bh" },
      h("span", { class: "kind cell" }, count > 1 ? "Code block " + (index + 1) : "Code"),
      h("span", { class: "mono" }, cell.id),
      h("span", { title: "time the code ran in the REPL, and wall time including the sub-calls it waited for" },
        "ran " + fmtDur(cell.duration) + (cell.wall !== null && cell.wall > (cell.duration || 0) * 1.5 + 0.001 ? " \u00b7 wall " + fmtDur(cell.wall) : "")),
      flags));
    box.appendChild(codeBlock(cell.code, key("code", run.id, cell.id)));
    if (cell.stdout) box.appendChild(outBlock("", "output", cell.stdout, key("out", run.id, cell.id)));
    if (cell.value !== null) box.appendChild(outBlock("val", "value", cell.value, key("val", run.id, cell.id)));
    if (cell.error !== null) box.appendChild(outBlock("err", cell.errorType ? "error: " + cell.errorType : "error", cell.error, key("err", run.id, cell.id)));
    if (cell.lost && cell.lost.length) box.appendChild(outBlock("err", "variables lost when the worker restarted", cell.lost.join(", "), null));
    if (cell.t1 === null) box.appendChild(h("div", { class: "empty-note" }, "the cell did not finish (the run was cut off)"));
    if (!cell.stdout && cell.value === null && cell.error === null && cell.t1 !== null && !cell.final && !cell.subs.length) {
      box.appendChild(h("div", { class: "empty-note" }, "printed nothing"));
    }
    cell.subs.forEach(function (sub) { box.appendChild(subNode(run, sub)); });
    return box;
  }

  function subNode(run, sub) {
    if (sub.child && RUNS.has(sub.child)) return runNode(RUNS.get(sub.child));
    var head = [
      h("span", { class: "tag fn" }, sub.fn),
      h("span", { class: "label", title: sub.prompt }, oneLine(sub.prompt, 120)),
      sub.error ? h("span", { class: "tag err" }, "error") : null,
      sub.cached ? cachedTag() : null,
      h("span", { class: "meta" }, sub.model),
      metaOf(sub.duration, sub.usage)
    ];
    return node(key("s", run.id, sub.id), "subcall", head, function (bd) {
      bd.appendChild(h("div", { class: "bh" }, h("span", { class: "kind sub" }, "Prompt"),
        h("span", null, fmtInt(sub.promptChars) + " characters" + (sub.prompt.length < sub.promptChars ? " (middle cut in the log)" : ""))));
      bd.appendChild(h("pre", { class: "code", "data-f": key("sp", run.id, sub.id) }, sub.prompt));
      if (sub.error) bd.appendChild(outBlock("err", "error", sub.error, key("se", run.id, sub.id)));
      if (sub.response || !sub.error) bd.appendChild(outBlock("val", "response", sub.response, key("sr", run.id, sub.id)));
    }, false);
  }

  // ---- focus and keyboard -----------------------------------------------------------------------
  // Make `hd` the current row; `keepFocus` leaves the keyboard where it is (in the search box).
  function setFocus(hd, scroll, keepFocus) {
    if (!hd) return;
    if (focused && focused !== hd) { focused.setAttribute("tabindex", "-1"); focused.classList.remove("focus"); }
    focused = hd;
    hd.setAttribute("tabindex", "0");
    hd.classList.add("focus");
    if (!keepFocus) hd.focus({ preventScroll: !scroll });
    if (scroll) hd.scrollIntoView({ block: "nearest" });
  }
  function visibleRows() {
    var rows = tree.querySelectorAll(".hd");
    var out = [];
    for (var i = 0; i < rows.length; i++) if (!rows[i].closest(".bd[hidden]")) out.push(rows[i]);
    return out;
  }
  function moveFocus(step) {
    var rows = visibleRows();
    if (!rows.length) return;
    var at = rows.indexOf(focused);
    var next = at < 0 ? 0 : Math.max(0, Math.min(rows.length - 1, at + step));
    setFocus(rows[next], true);
  }
  function parentRow(hd) {
    var parentNode = hd.parentElement.parentElement.closest(".node");
    return parentNode ? parentNode.querySelector(":scope > .hd") : null;
  }
  function expandRuns() {
    var queue = ROOTS.slice();
    var opened = 0;
    while (queue.length && opened < 2000) {
      var run = queue.shift();
      runChain(run.id).forEach(function (k) { openKey(k); });
      opened++;
      queue.push.apply(queue, childRuns(run));
    }
  }
  function collapseAll() {
    nodes.forEach(function (rec) { if (rec.open) setOpen(rec, false); });
    ROOTS.forEach(function (run) { var rec = nodes.get(key("r", run.id)); if (rec) setOpen(rec, true); });
    var first = tree.querySelector(".hd");
    if (first) setFocus(first, true);
  }
  function openKey(k) {
    var rec = nodes.get(k);
    if (!rec && iterLoc.has(k)) {
      var loc = iterLoc.get(k);
      var pager = pagers.get(loc[0].id);
      if (pager) loadMore(pager, loc[1]);
      rec = nodes.get(k);
    }
    if (rec && !rec.open) setOpen(rec, true);
    return rec;
  }
  function reveal(chain) {
    var rec = null;
    for (var i = 0; i < chain.length; i++) {
      rec = openKey(chain[i]);
      if (!rec) return null;
    }
    return rec;
  }

  var help = document.getElementById("help");
  var searchBox = document.getElementById("search");
  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (!help.hidden && (event.key === "Escape" || event.key === "?")) { help.hidden = true; event.preventDefault(); return; }
    if (target === searchBox) {
      if (event.key === "Enter") { event.preventDefault(); runSearchNow(); step(event.shiftKey ? -1 : 1); }
      else if (event.key === "Escape") { searchBox.value = ""; runSearchNow(); if (focused) setFocus(focused, true); else moveFocus(0); }
      return;
    }
    if (target.closest && target.closest("input, textarea, select")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    var rec = focused ? focused._rec : null;
    var handled = true;
    switch (event.key) {
      case "/": searchBox.focus(); searchBox.select(); break;
      case "ArrowDown": case "j": moveFocus(1); break;
      case "ArrowUp": case "k": moveFocus(-1); break;
      case "ArrowRight": case "l":
        if (rec && !rec.open) setOpen(rec, true); else moveFocus(1);
        break;
      case "ArrowLeft": case "h":
        if (rec && rec.open) setOpen(rec, false); else if (focused) setFocus(parentRow(focused) || focused, true);
        break;
      case "Enter": case " ": if (rec) setOpen(rec, !rec.open); break;
      case "n": step(1); break;
      case "N": step(-1); break;
      case "t": toggleTimeline(); break;
      case "e": expandRuns(); break;
      case "c": collapseAll(); break;
      case "g": case "Home": moveFocus(-1e9); break;
      case "G": case "End": moveFocus(1e9); break;
      case "?": help.hidden = false; break;
      default: handled = false;
    }
    if (handled) event.preventDefault();
  });
  tree.addEventListener("click", function (event) {
    var hd = event.target.closest(".hd");
    if (!hd || !hd._rec || event.target.closest("button, a, input")) return;
    setOpen(hd._rec, !hd._rec.open);
    setFocus(hd);
  });
  tree.addEventListener("focusin", function (event) {
    var hd = event.target.closest && event.target.closest(".hd");
    if (hd && hd !== focused) setFocus(hd);
  });
  help.addEventListener("click", function (event) { if (event.target === help) help.hidden = true; });

  // ---- search: over the data, so it finds what is not drawn yet ---------------------------------------
  var search = { query: "", hits: [], current: -1, index: null, timer: 0 };
  var hasHighlights = typeof window.Highlight === "function" && window.CSS && CSS.highlights;

  function buildIndex() {
    var index = [];
    function add(text, field, chain) { if (text) index.push({ text: String(text).toLowerCase(), f: field, chain: chain }); }
    DATA.runs.forEach(function (run) {
      var chain = runChain(run.id);
      add(run.query, key("q", run.id), chain);
      if (run.finished) add(show(run.answer), key("a", run.id), chain);
      if (run.context) add(run.context.preview, key("x", run.id), chain);
      run.iterations.forEach(function (it) {
        var itChain = chain.concat([key("i", run.id, it.n)]);
        var codes = cellCodes(it);
        it.calls.forEach(function (call) {
          add(replySearchText(call.text || "", codes), key("t", run.id, call.id), itChain);
          add(call.error, key("ce", run.id, call.id), itChain);
          (call.messages || []).forEach(function (m, i) {
            if (m.role === "system") return; // the same long prompt in every run: noise in a search
            var text = m.prompt !== undefined ? DATA.prompts[m.prompt] : m.content;
            add(text, key("p", run.id, call.id, i), itChain.concat([key("m", run.id, call.id)]));
          });
        });
        it.cells.forEach(function (cell) {
          add(cell.code, key("code", run.id, cell.id), itChain);
          add(cell.stdout, key("out", run.id, cell.id), itChain);
          add(cell.value, key("val", run.id, cell.id), itChain);
          add(cell.error, key("err", run.id, cell.id), itChain);
          cell.subs.forEach(function (sub) { addSub(sub, run, itChain); });
        });
        it.subs.forEach(function (sub) { addSub(sub, run, itChain); });
      });
    });
    function addSub(sub, run, itChain) {
      if (sub.child && RUNS.has(sub.child)) return; // its prompt and answer are the child run's query and answer
      var subChain = itChain.concat([key("s", run.id, sub.id)]);
      add(sub.prompt, key("sp", run.id, sub.id), subChain);
      add(sub.response, key("sr", run.id, sub.id), subChain);
      add(sub.error, key("se", run.id, sub.id), subChain);
    }
    return index;
  }
  function runSearch(query) {
    query = query.trim().toLowerCase();
    if (query === search.query) return;
    search.query = query;
    search.hits = [];
    search.current = -1;
    clearCurrent();
    if (query) {
      if (!search.index) search.index = buildIndex();
      var entries = search.index;
      for (var i = 0; i < entries.length; i++) if (entries[i].text.indexOf(query) >= 0) search.hits.push(entries[i]);
    }
    markAll();
    updateCount();
  }
  function runSearchNow() { clearTimeout(search.timer); runSearch(searchBox.value); }
  function updateCount() {
    var count = document.getElementById("search-count");
    if (!search.query) count.textContent = "";
    else if (!search.hits.length) count.textContent = "no matches";
    else count.textContent = (search.current >= 0 ? search.current + 1 + " of " : "") + fmtInt(search.hits.length) + (search.current >= 0 ? "" : " matches");
  }
  function clearCurrent() {
    var old = tree.querySelector(".hit-current");
    if (old) old.classList.remove("hit-current");
    if (hasHighlights) CSS.highlights.delete("rlm-current");
  }
  function step(direction) {
    if (!search.hits.length) return;
    var n = search.hits.length;
    search.current = search.current < 0 ? (direction > 0 ? 0 : n - 1) : (search.current + direction + n) % n;
    goTo(search.hits[search.current]);
    updateCount();
  }
  function goTo(hit) {
    clearCurrent();
    var rec = reveal(hit.chain);
    var el = tree.querySelector('[data-f="' + cssEscape(hit.f) + '"]');
    if (!el) return;
    for (var open = el.closest("details"); open; open = open.parentElement.closest("details")) open.open = true;
    el.classList.add("hit-current");
    var row = el.closest(".node");
    if (row) setFocus(row.querySelector(":scope > .hd"), false, document.activeElement === searchBox);
    el.scrollIntoView({ block: "center" });
    if (hasHighlights) CSS.highlights.set("rlm-current", new Highlight(...rangesIn(el, search.query)));
    return rec;
  }
  function cssEscape(s) { return window.CSS && CSS.escape ? CSS.escape(s) : s.replace(/["\\]/g, "\\$&"); }
  function rangesIn(el, query) {
    var walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    var texts = [], offsets = [], whole = "";
    for (var t = walker.nextNode(); t; t = walker.nextNode()) { texts.push(t); offsets.push(whole.length); whole += t.data; }
    var lower = whole.toLowerCase();
    var ranges = [];
    var at = lower.indexOf(query);
    while (at >= 0 && ranges.length < 200) {
      var range = document.createRange();
      var a = locate(at), b = locate(at + query.length);
      range.setStart(texts[a], at - offsets[a]);
      range.setEnd(texts[b], at + query.length - offsets[b]);
      ranges.push(range);
      at = lower.indexOf(query, at + query.length);
    }
    function locate(pos) {
      var lo = 0, hi = offsets.length - 1;
      while (lo < hi) { var mid = (lo + hi + 1) >> 1; if (offsets[mid] <= pos) lo = mid; else hi = mid - 1; }
      return lo;
    }
    return ranges;
  }
  var allRanges = [];
  function markIn(root) {
    if (!hasHighlights || !search.query) return;
    var els = root.querySelectorAll("[data-f]");
    for (var i = 0; i < els.length; i++) {
      if (els[i].textContent.toLowerCase().indexOf(search.query) >= 0) allRanges.push.apply(allRanges, rangesIn(els[i], search.query));
    }
    CSS.highlights.set("rlm-hit", new Highlight(...allRanges));
  }
  function markAll() {
    if (!hasHighlights) return;
    allRanges = [];
    CSS.highlights.delete("rlm-hit");
    if (search.query) markIn(tree);
  }
  searchBox.addEventListener("input", function () {
    clearTimeout(search.timer);
    search.timer = setTimeout(function () { runSearch(searchBox.value); }, 120);
  });
  document.getElementById("search-next").addEventListener("click", function () { runSearchNow(); step(1); });
  document.getElementById("search-prev").addEventListener("click", function () { runSearchNow(); step(-1); });
  document.getElementById("expand-runs").addEventListener("click", expandRuns);
  document.getElementById("collapse-all").addEventListener("click", collapseAll);
  document.getElementById("show-help").addEventListener("click", function () { help.hidden = false; });

  // ---- summary --------------------------------------------------------------------------------
  function renderSummary() {
    var s = DATA.summary;
    var header = document.getElementById("summary");
    header.textContent = "";
    header.appendChild(h("h1", null, DATA.title));
    header.appendChild(h("p", { class: "sub" }, statusTag(s.status, s.limit), "  ",
      fmtInt(s.runs) + " run" + (s.runs === 1 ? "" : "s") + " \u00b7 depth " + s.maxDepth + " \u00b7 " +
      fmtInt(s.iterations) + " iterations \u00b7 " + fmtInt(s.cells) + " cells"));
    var tone = s.status === "completed" ? "" : (s.status === "error" ? " bad" : (s.status === "cancelled" ? " cancel" : " warn"));
    header.appendChild(h("div", { class: "answer" + tone, id: "sum-answer" },
      h("div", { class: "k" }, s.status === "completed" ? "Final answer" : "Answer (the run did not complete)"),
      h("pre", null, s.status === "unfinished" ? "(no answer yet)" : show(s.answer))));
    renderCitations(header);
    var u = s.usage;
    var cards = h("div", { class: "cards" });
    function card(id, k, v, d, title) {
      cards.appendChild(h("div", { class: "card", id: id, title: title || null }, h("div", { class: "k" }, k), h("div", { class: "v" }, v), d ? h("div", { class: "d" }, d) : null));
    }
    card("sum-time", "Wall time", fmtDur(s.duration));
    card("sum-tokens", "Tokens", fmtInt(u.p + u.c), fmtInt(u.p) + " in \u00b7 " + fmtInt(u.c) + " out");
    card("sum-cost", "Cost", u.cost === null ? "unknown" : fmtUsd(u.cost), u.unknown ? u.unknown + " call" + (u.unknown === 1 ? "" : "s") + " with unknown price" : "all calls priced");
    card("sum-calls", "Model calls", fmtInt(s.lmCalls + s.subCalls - countChildCalls()), fmtInt(s.lmCalls) + " root \u00b7 " + fmtInt(s.subCalls - countChildCalls()) + " sub");
    card("sum-runs", "Runs", fmtInt(s.runs), "max depth " + s.maxDepth);
    card("sum-cells", "Code cells", fmtInt(s.cells), s.cellErrors ? fmtInt(s.cellErrors) + " with errors" : "no errors");
    header.appendChild(cards);
    // where time went
    var t = s.time;
    var other = Math.max(0, t.wall - t.root - t.sub - t.repl);
    var busy = t.root + t.sub + t.repl + other;
    if (busy > 0) {
      var split = h("div", { class: "split", title: "Sums over the whole tree; concurrent sub-calls can add up to more than the wall time" });
      var parts = [["c-lm", "root model", t.root], ["c-sub", "sub-model calls", t.sub], ["c-cell", "code in the REPL", t.repl], ["c-other", "other (engine, REPL start, waiting)", other]];
      var legend = h("div", { class: "legend", id: "sum-split" });
      parts.forEach(function (p) {
        if (p[2] <= 0) return;
        var seg = h("span", { class: p[0], title: p[1] + ": " + fmtDur(p[2]) });
        seg.style.width = (100 * p[2] / busy).toFixed(2) + "%";
        split.appendChild(seg);
        legend.appendChild(h("span", null, h("i", { class: p[0] }), p[1] + " " + fmtDur(p[2]) + " (" + Math.round(100 * p[2] / busy) + "%)"));
      });
      header.appendChild(h("div", null, h("div", { class: "legend" }, "Where time went"), split, legend));
    }
    var names = Object.keys(s.models);
    if (names.length) {
      var table = h("table", null, h("tr", null, h("th", null, "model"), h("th", null, "calls"), h("th", null, "prompt tokens"), h("th", null, "completion tokens"), h("th", null, "cost")));
      names.forEach(function (name) {
        var m = s.models[name];
        table.appendChild(h("tr", null, h("td", { class: "mono" }, name), h("td", null, fmtInt(m.calls)), h("td", null, fmtInt(m.p)), h("td", null, fmtInt(m.c)), h("td", null, fmtCost(m))));
      });
      header.appendChild(h("details", { class: "models" }, h("summary", null, "Usage per model (" + names.length + ")"), table));
    }
    if (DATA.problems.length) {
      header.appendChild(h("div", { class: "problems" }, "Notes: " + DATA.problems.join("; ")));
    }
  }
  // the verified spans of the context behind the answer (RLMResult.citations), quoted and highlighted
  function renderCitations(header) {
    var cites = DATA.citations || [];
    if (!cites.length) return;
    var list = h("ol", { class: "cites" });
    cites.forEach(function (c) {
      var where = (c.item === null || c.item === undefined ? "" : "item " + JSON.stringify(c.item) + " \u00b7 ") +
        "chars " + fmtInt(c.start) + "\u2013" + fmtInt(c.end);
      list.appendChild(h("li", null, h("span", { class: "where mono" }, where),
        c.source ? h("span", { class: "src", title: "how it was found" }, c.source) : null,
        h("mark", { class: "quote" }, c.text)));
    });
    header.appendChild(h("details", { class: "citations", id: "sum-citations", open: true },
      h("summary", null, "Citations (" + cites.length + "): where the answer comes from in the context"), list));
  }
  function countChildCalls() {
    var n = 0;
    DATA.runs.forEach(function (run) { n += run.children.length; });
    return n;
  }

  // ---- timeline: one row per run, drawn on a canvas -------------------------------------------
  var timeline = document.getElementById("timeline");
  var canvas = document.getElementById("tl-canvas");
  var tip = document.getElementById("tl-tip");
  var LANE = 18, AXIS = 20, GUTTER = 92;
  var lanes = [];
  var view = { t0: 0, t1: 1 };
  var span = { t0: 0, t1: 1 };
  function buildLanes() {
    var order = [];
    (function walk(runs) {
      runs.forEach(function (run) { if (order.length < MAX_LANES) { order.push(run); walk(childRuns(run)); } });
    })(ROOTS);
    lanes = order.map(function (run) {
      var items = [];
      var chain = runChain(run.id);
      run.iterations.forEach(function (it) {
        var itChain = chain.concat([key("i", run.id, it.n)]);
        it.calls.forEach(function (c) { items.push({ t0: c.t0, t1: c.t1 !== null ? c.t1 : run.t1End, type: "lm", what: "root-model call " + c.id + " (iteration " + it.n + ")", extra: c.usage ? tokTitle(c.usage) : "", chain: itChain, f: key("t", run.id, c.id) }); });
        it.cells.forEach(function (c) {
          items.push({ t0: c.t0, t1: c.t1 !== null ? c.t1 : run.t1End, type: c.error !== null ? "err" : "cell", what: "code cell " + c.id + " (iteration " + it.n + ")" + (c.error !== null ? ": " + (c.errorType || "error") : ""), extra: "ran " + fmtDur(c.duration) + " in the REPL", chain: itChain, f: key("code", run.id, c.id) });
          c.subs.forEach(function (s) { if (!s.child) items.push(subItem(run, s, itChain)); });
        });
        it.subs.forEach(function (s) { if (!s.child) items.push(subItem(run, s, itChain)); });
      });
      return { run: run, items: items, chain: chain };
    });
    span.t0 = Math.min.apply(null, order.map(function (r) { return r.t0; }).concat([0]));
    span.t1 = Math.max(latest, span.t0 + 1e-6);
    view.t0 = span.t0; view.t1 = span.t1;
    var legend = document.getElementById("tl-legend");
    [["c-lm", "root-model call"], ["c-cell", "code cell"], ["c-err", "cell with an error"], ["c-sub", "sub-model call"], ["c-child", "child run"]].forEach(function (p) {
      legend.appendChild(h("span", null, h("i", { class: p[0] }), p[1]));
    });
    if (DATA.runs.length > MAX_LANES) legend.appendChild(h("span", null, "(first " + MAX_LANES + " of " + fmtInt(DATA.runs.length) + " runs)"));
  }
  function subItem(run, s, itChain) {
    return { t0: s.t0, t1: s.t1 !== null ? s.t1 : run.t1End, type: "sub", sub: true, what: s.fn + " " + s.id + " to " + s.model, extra: s.usage ? tokTitle(s.usage) : "", chain: itChain.concat([key("s", run.id, s.id)]), f: key("sp", run.id, s.id) };
  }
  var colors = {};
  function readColors() {
    var style = getComputedStyle(document.documentElement);
    ["lm", "cell", "cell-err", "sub", "child", "run-bg", "muted", "line", "fg"].forEach(function (n) { colors[n] = style.getPropertyValue("--" + n).trim(); });
  }
  function xOf(t, width) { return GUTTER + (t - view.t0) / (view.t1 - view.t0) * (width - GUTTER - 8); }
  function drawTimeline() {
    if (timeline.hidden) return;
    var width = canvas.parentElement.clientWidth || 800;
    var height = AXIS + lanes.length * LANE + 4;
    var ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    canvas.style.height = height + "px";
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    // axis
    var range = view.t1 - view.t0;
    var stepSize = niceStep(range / Math.max(2, Math.floor((width - GUTTER) / 90)));
    ctx.fillStyle = colors.muted;
    ctx.strokeStyle = colors.line;
    ctx.lineWidth = 1;
    for (var t = Math.ceil(view.t0 / stepSize) * stepSize; t <= view.t1; t += stepSize) {
      var x = Math.round(xOf(t, width)) + 0.5;
      ctx.beginPath(); ctx.moveTo(x, AXIS - 4); ctx.lineTo(x, height); ctx.stroke();
      ctx.fillText(fmtDur(t - span.t0 + 0).replace(" ", "\u2009"), x + 3, 9);
    }
    lanes.forEach(function (lane, i) {
      var y = AXIS + i * LANE;
      var run = lane.run;
      ctx.fillStyle = colors.fg;
      ctx.fillText(("\u2003".repeat(Math.min(run.depth, 4))) + run.id, 4, y + LANE / 2, GUTTER - 8);
      var x0 = Math.max(GUTTER, xOf(run.t0, width)), x1 = xOf(run.t1End, width);
      if (x1 > GUTTER) { ctx.fillStyle = run.depth ? colors.child : colors["run-bg"]; ctx.globalAlpha = run.depth ? 0.18 : 1; ctx.fillRect(x0, y + 2, Math.max(1, x1 - x0), LANE - 4); ctx.globalAlpha = 1; }
      lane.items.forEach(function (item) {
        var a = xOf(item.t0, width), b = xOf(item.t1, width);
        if (b < GUTTER || a > width) return;
        a = Math.max(a, GUTTER);
        ctx.fillStyle = item.type === "lm" ? colors.lm : item.type === "err" ? colors["cell-err"] : item.type === "sub" ? colors.sub : colors.cell;
        if (item.sub) ctx.fillRect(a, y + LANE - 7, Math.max(1, b - a), 4);
        else ctx.fillRect(a, y + 3, Math.max(1, b - a), LANE - 10);
      });
    });
  }
  function niceStep(raw) {
    var power = Math.pow(10, Math.floor(Math.log10(raw || 1e-6)));
    var f = raw / power;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * power;
  }
  function itemAt(event) {
    var rect = canvas.getBoundingClientRect();
    var x = event.clientX - rect.left, y = event.clientY - rect.top;
    var laneIndex = Math.floor((y - AXIS) / LANE);
    if (laneIndex < 0 || laneIndex >= lanes.length || x < GUTTER) return null;
    var lane = lanes[laneIndex];
    var width = rect.width;
    var best = null;
    var slack = 3;
    var inSubRow = (y - AXIS - laneIndex * LANE) > LANE - 8;
    lane.items.forEach(function (item) {
      var a = xOf(item.t0, width) - slack, b = Math.max(xOf(item.t1, width), a + 1 + slack) + slack;
      if (x >= a && x <= b && (!best || (item.sub === inSubRow && best.sub !== inSubRow))) best = item;
    });
    if (!best) {
      var run = lane.run;
      if (x >= xOf(run.t0, width) && x <= xOf(run.t1End, width)) return { what: "run " + run.id + " (depth " + run.depth + "): " + oneLine(run.query, 80), extra: fmtDur(run.t1End - run.t0), chain: lane.chain, f: key("q", run.id) };
    }
    return best;
  }
  var drag = null;
  canvas.addEventListener("mousemove", function (event) {
    if (drag) {
      var width = canvas.getBoundingClientRect().width - GUTTER - 8;
      var dt = (event.clientX - drag.x) / width * (drag.t1 - drag.t0);
      view.t0 = drag.t0 - dt; view.t1 = drag.t1 - dt;
      drag.moved = true;
      scheduleDraw();
      return;
    }
    var item = itemAt(event);
    if (!item) { tip.hidden = true; return; }
    tip.textContent = item.what + (item.t1 !== undefined ? "\n" + fmtDur(item.t1 - item.t0) : "") + (item.extra ? "\n" + item.extra : "");
    tip.hidden = false;
    tip.style.left = Math.min(event.clientX + 12, window.innerWidth - 300) + "px";
    tip.style.top = (event.clientY + 14) + "px";
  });
  canvas.addEventListener("mouseleave", function () { tip.hidden = true; });
  canvas.addEventListener("mousedown", function (event) { drag = { x: event.clientX, t0: view.t0, t1: view.t1, moved: false }; });
  window.addEventListener("mouseup", function (event) {
    var wasDrag = drag && drag.moved;
    drag = null;
    if (wasDrag || event.target !== canvas) return;
    var item = itemAt(event);
    if (!item) return;
    reveal(item.chain);
    var el = tree.querySelector('[data-f="' + cssEscape(item.f) + '"]');
    var target = el ? el.closest(".node") : null;
    if (el) el.scrollIntoView({ block: "center" });
    if (target) setFocus(target.querySelector(":scope > .hd"));
  });
  canvas.addEventListener("wheel", function (event) {
    event.preventDefault();
    var rect = canvas.getBoundingClientRect();
    var width = rect.width - GUTTER - 8;
    var at = view.t0 + Math.max(0, event.clientX - rect.left - GUTTER) / width * (view.t1 - view.t0);
    var factor = Math.exp(event.deltaY * 0.0015);
    var minSpan = (span.t1 - span.t0) / 1e5;
    var newSpan = Math.max(minSpan, Math.min(span.t1 - span.t0, (view.t1 - view.t0) * factor));
    var share = (at - view.t0) / (view.t1 - view.t0);
    view.t0 = at - share * newSpan; view.t1 = view.t0 + newSpan;
    scheduleDraw();
  }, { passive: false });
  canvas.addEventListener("dblclick", function () { view.t0 = span.t0; view.t1 = span.t1; scheduleDraw(); });
  var drawPending = false;
  function scheduleDraw() {
    if (drawPending) return;
    drawPending = true;
    requestAnimationFrame(function () { drawPending = false; drawTimeline(); });
  }
  function toggleTimeline() {
    timeline.hidden = !timeline.hidden;
    document.getElementById("toggle-timeline").setAttribute("aria-pressed", timeline.hidden ? "false" : "true");
    drawTimeline();
  }
  document.getElementById("toggle-timeline").addEventListener("click", toggleTimeline);
  window.addEventListener("resize", scheduleDraw);
  if (window.matchMedia) {
    var scheme = window.matchMedia("(prefers-color-scheme: dark)");
    if (scheme.addEventListener) scheme.addEventListener("change", function () { readColors(); scheduleDraw(); });
  }

  // ---- start --------------------------------------------------------------------------------
  renderSummary();
  document.title = DATA.title;
  if (!DATA.runs.length) tree.appendChild(h("p", { class: "empty-note" }, "This trajectory has no runs."));
  ROOTS.forEach(function (run) { tree.appendChild(runNode(run)); });
  var first = tree.querySelector(".hd");
  if (first) { first.setAttribute("tabindex", "0"); focused = first; first.classList.add("focus"); }
  readColors();
  buildLanes();
  drawTimeline();
  window.rlmViewer = {
    readyMs: performance.now(),
    reveal: function (runId) { return !!reveal(runChain(runId)); },
    search: function (query) { searchBox.value = query; runSearchNow(); step(1); return search.hits.length; },
    nodeCount: function () { return nodes.size; }
  };
  document.documentElement.setAttribute("data-ready", "true");
})();
