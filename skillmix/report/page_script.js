(function () {
  "use strict";
  // Sortable tables: every table with one header row; click (or Enter on) a header.
  function key(td) {
    if (!td) return null;
    var v = td.getAttribute("data-value");
    if (v === null) v = td.getAttribute("data-score");
    if (v !== null) { try { return JSON.parse(v); } catch (e) { return v; } }
    var t = td.textContent.trim();
    var m = /^-?[0-9][0-9,]*(\.[0-9]+)?/.exec(t);
    if (m) return parseFloat(m[0].replace(/,/g, ""));
    return (t === "" || t === "\u2014" || t === "n/a") ? null : t.toLowerCase();
  }
  function compare(a, b) {
    if (a === b) return 0;
    if (a === null) return 1;
    if (b === null) return -1;
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b));
  }
  function sortable(table) {
    var head = table.tHead;
    if (!head || head.rows.length !== 1 || !table.tBodies.length) return;
    var ths = head.rows[0].cells;
    for (var i = 0; i < ths.length; i++) if (ths[i].colSpan > 1) return;
    Array.prototype.forEach.call(ths, function (th, col) {
      th.tabIndex = 0;
      th.classList.add("sortable");
      th.setAttribute("aria-sort", "none");
      function go() {
        var asc = th.getAttribute("aria-sort") !== "ascending";
        Array.prototype.forEach.call(ths, function (o) { o.setAttribute("aria-sort", "none"); });
        th.setAttribute("aria-sort", asc ? "ascending" : "descending");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var a = key(r1.cells[col]), b = key(r2.cells[col]);
          if (a === null || b === null) return compare(a, b);
          return asc ? compare(a, b) : compare(b, a);
        });
        rows.forEach(function (r) { body.appendChild(r); });
        // tie-group lines only mean something in rank order
        table.classList.toggle("resorted", !(col === 0 && asc));
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) {
        if (e.key === "Enter" || e.key === " ") { e.preventDefault(); go(); }
      });
    });
  }

  // The answer browser: data inflated from the page, rows rendered a page at a time,
  // an answer's conversation and verdicts only when it is opened.
  var PAGE = 100;
  function $(id) { return document.getElementById(id); }
  function node(tag, text, cls) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }
  function fmt(x, d) { return (x === null || x === undefined) ? "\u2014" : x.toFixed(d); }
  function pts(x) { return x % 1 ? x.toFixed(2) : String(x); }

  async function inflate(b64) {
    var bin = atob(b64);
    var bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return JSON.parse(await new Response(stream).text());
  }

  function browser(data) {
    var S = data.strings;
    var all = data.answers.map(function (a, i) {
      var sc = a[9];
      return {
        i: i, raw: a, student: S[a[0]], grader: S[a[1]], k: a[2], round: a[3], index: a[4],
        topic: S[a[5]], skills: a[6].map(function (x) { return S[x]; }),
        voted: a[8], scores: sc, graded: a[13].length > 0,
        score: sc ? [sc[0], sc[2], a[8].reduce(function (p, q) { return p + q; }, 0)] : [-1, -1, -1]
      };
    });
    var shown = [], limit = PAGE, sortKey = "model", desc = false;
    var body = $("ab-table").tBodies[0];
    var graders = {};
    all.forEach(function (a) { graders[a.grader] = 1; });
    var manyGraders = Object.keys(graders).length > 1;

    function order(a, b) {
      var c = 0;
      if (sortKey === "score") {
        for (var j = 0; j < 3 && !c; j++) c = a.score[j] - b.score[j];
      } else if (sortKey === "k") c = a.k - b.k;
      else if (sortKey === "round") c = a.round - b.round;
      else if (sortKey === "combination") c = a.index - b.index;
      else if (sortKey === "topic") c = a.topic.localeCompare(b.topic);
      else c = a.i - b.i;  // model: the page's own order (model, grader, k, round, combination)
      if (desc) c = -c;
      return c || a.i - b.i;
    }
    function apply() {
      var model = $("ab-model").value, k = $("ab-k").value, round = $("ab-round").value;
      var skill = $("ab-skill").value.trim().toLowerCase();
      var topic = $("ab-topic").value.trim().toLowerCase();
      var score = $("ab-score").value;
      sortKey = $("ab-sort").value;
      desc = $("ab-desc").checked;
      shown = all.filter(function (a) {
        if (model && a.student !== model) return false;
        if (k && String(a.k) !== k) return false;
        if (round && String(a.round) !== round) return false;
        if (topic && a.topic.toLowerCase().indexOf(topic) < 0) return false;
        if (skill && !a.skills.some(function (s) { return s.toLowerCase().indexOf(skill) >= 0; })) return false;
        if (score === "full" && !(a.scores && a.scores[0] === 1)) return false;
        if (score === "not-full" && !(a.scores && a.scores[0] !== 1)) return false;
        if (score === "all-skills" && !(a.scores && a.scores[1] === 1)) return false;
        if (score === "unscored" && (a.scores || !a.graded)) return false;
        if (score === "ungraded" && a.graded) return false;
        return true;
      });
      shown.sort(order);
      limit = PAGE;
      draw();
    }
    function draw() {
      body.textContent = "";
      shown.slice(0, limit).forEach(function (a) { body.appendChild(row(a)); });
      var n = Math.min(limit, shown.length);
      $("ab-status").textContent = shown.length + " of " + all.length + " answers match" +
        (n < shown.length ? "; showing the first " + n : "") + ".";
      $("ab-more").hidden = n >= shown.length;
    }
    function row(a) {
      var tr = node("tr", null, "ab-row");
      var btn = node("button", "\u25B8", "ab-open");
      btn.type = "button";
      btn.setAttribute("aria-expanded", "false");
      btn.setAttribute("aria-label", "show answer " + (a.i + 1));
      var first = node("td");
      first.appendChild(btn);
      tr.appendChild(first);
      tr.appendChild(node("td", manyGraders ? a.student + " / " + a.grader : a.student));
      [a.k, a.index, a.round].forEach(function (x) { tr.appendChild(node("td", x, "num")); });
      tr.appendChild(node("td", a.topic));
      tr.appendChild(node("td", a.skills.join(", ")));
      var sc = a.scores;
      if (!a.graded) {
        var wait = node("td", "not graded yet", "pending");
        wait.colSpan = 3;
        tr.appendChild(wait);
      } else {
      tr.appendChild(node("td", sc ? fmt(sc[0], 0) : "\u2014", "num"));
      tr.appendChild(node("td", sc ? fmt(sc[2], 2) : "\u2014", "num"));
      tr.appendChild(node("td", a.voted ? pts(a.score[2]) + " / " + a.voted.length : "\u2014", "num"));
      }
      btn.addEventListener("click", function () {
        var open = btn.getAttribute("aria-expanded") === "true";
        if (open) { tr.nextSibling.remove(); }
        else { tr.after(detail(a)); }
        btn.setAttribute("aria-expanded", open ? "false" : "true");
        btn.textContent = open ? "\u25B8" : "\u25BE";
      });
      return tr;
    }
    function pre(label, text, cls) {
      var box = node("div", null, "turn " + (cls || ""));
      box.appendChild(node("div", label, "turn-label"));
      box.appendChild(node("pre", text));
      return box;
    }
    function fold(label, text) {
      var d = node("details");
      d.appendChild(node("summary", label));
      d.appendChild(node("pre", text));
      return d;
    }
    function detail(a) {
      var r = a.raw, tr = node("tr", null, "ab-detail");
      var td = node("td");
      td.colSpan = 10;
      var answer = S[r[7]];
      var model = S[r[14]];
      td.appendChild(node("p", "model " + a.student + (model ? " (" + model + ")" : "") +
        " \u00B7 grader " + a.grader + " \u00B7 k = " + a.k + " \u00B7 combination " + a.index +
        " \u00B7 generation round " + a.round + " \u00B7 topic " + a.topic, "note"));
      td.appendChild(node("h4", "Conversation"));
      if (r[11] !== null) td.appendChild(fold("system prompt", S[r[11]]));
      var turns = r[12];
      turns.forEach(function (t, j) {
        var last = j === turns.length - 1;
        td.appendChild(pre(j === 0 ? "request" : "revision request", S[t[0]], "user"));
        td.appendChild(pre(j === 0 ? (last ? "reply" : "first draft") : (last ? "revision" : "reply " + (j + 1)), S[t[1]], "assistant"));
      });
      if (!turns.length) td.appendChild(node("p", "The generation record is not available.", "note"));
      td.appendChild(node("h4", "Graded answer"));
      td.appendChild(node("blockquote", answer));
      td.appendChild(node("h4", "Verdicts"));
      if (!a.graded) {
        td.appendChild(node("p", "Not graded yet: this answer's grading has not finished, so it counts in no metric.", "note"));
        tr.appendChild(td);
        return tr;
      }
      var rounds = r[13], rubric = r[15].map(function (x) { return S[x]; });
      var named = r[10].map(function (x) { return S[x]; });
      var tbl = node("table", null, "ab-verdicts");
      tbl.appendChild(node("caption", "Points per rubric item: each grading round, and the vote the metrics use"));
      var hr = node("tr");
      hr.appendChild(node("th", "rubric item"));
      rounds.forEach(function (g) { hr.appendChild(node("th", "round " + g[0], "num")); });
      hr.appendChild(node("th", "voted", "num"));
      Array.prototype.forEach.call(hr.cells, function (c) { c.scope = "col"; });
      var thead = node("thead"); thead.appendChild(hr); tbl.appendChild(thead);
      var tb = node("tbody");
      rubric.forEach(function (label, j) {
        var rr = node("tr");
        var th = node("th", label, j < a.k && named.indexOf(label) >= 0 ? "hit" : null);
        th.scope = "row";
        rr.appendChild(th);
        rounds.forEach(function (g) {
          rr.appendChild(node("td", g[2] && j < g[2].length ? pts(g[2][j]) : "\u2014", "num"));
        });
        rr.appendChild(node("td", a.voted ? pts(a.voted[j]) : "\u2014", "num"));
        tb.appendChild(rr);
      });
      tbl.appendChild(tb);
      var wrap = node("div", null, "tw"); wrap.appendChild(tbl); td.appendChild(wrap);
      var sc = a.scores;
      td.appendChild(node("p", sc ? "full marks " + fmt(sc[0], 0) + " \u00B7 all skills " + fmt(sc[1], 0) +
        " \u00B7 skill fraction " + fmt(sc[2], 2) : "No usable verdict: this answer counts in no metric.", "note"));
      if (named.length) td.appendChild(node("p", "Names its skill(s): " + named.join(", "), "note"));
      rounds.forEach(function (g) {
        td.appendChild(fold("round " + g[0] + " reply (" + g[1] + (g[5] > 1 ? ", " + g[5] + " asks" : "") + ")",
          g[3] === null ? "(no reply)" : S[g[3]]));
      });
      var prompts = [];
      rounds.forEach(function (g) { if (prompts.indexOf(g[4]) < 0) prompts.push(g[4]); });
      prompts.forEach(function (p, j) {
        td.appendChild(fold(prompts.length > 1 ? "grading prompt " + (j + 1) : "grading prompt",
          S[p].split("\u0000").join(answer)));
      });
      tr.appendChild(td);
      return tr;
    }
    ["ab-model", "ab-k", "ab-round", "ab-score", "ab-sort", "ab-desc"].forEach(function (id) {
      $(id).addEventListener("change", apply);
    });
    ["ab-skill", "ab-topic"].forEach(function (id) { $(id).addEventListener("input", apply); });
    $("ab-more").addEventListener("click", function () { limit += PAGE; draw(); });
    Array.prototype.forEach.call($("ab-table").tHead.rows[0].cells, function (th) {
      var k = th.getAttribute("data-sort");
      if (!k) return;
      th.tabIndex = 0;
      function go() {
        var s = $("ab-sort"), d = $("ab-desc");
        if (s.value === k) d.checked = !d.checked; else { s.value = k; d.checked = k === "score"; }
        apply();
      }
      th.addEventListener("click", go);
      th.addEventListener("keydown", function (e) { if (e.key === "Enter") go(); });
    });
    // A drill-down link (#answers?student=S&k=K&skill=X) sets the filters it names and
    // clears the others, then shows the browser.
    function fromHash() {
      var h = location.hash;
      if (h.indexOf("#answers?") !== 0) return false;
      var q = new URLSearchParams(h.slice("#answers?".length));
      [["ab-model", "student"], ["ab-k", "k"], ["ab-round", "round"], ["ab-skill", "skill"],
       ["ab-topic", "topic"], ["ab-score", "score"]].forEach(function (p) {
        $(p[0]).value = q.get(p[1]) || "";
      });
      return true;
    }
    function follow() {
      if (!fromHash()) return;
      apply();
      $("answers").scrollIntoView();
    }
    window.addEventListener("hashchange", follow);
    $("ab-filters").hidden = false;
    apply();
    follow();
  }

  function start() {
    Array.prototype.forEach.call(document.querySelectorAll("main table"), function (t) {
      if (t.id !== "ab-table") sortable(t);
    });
    var src = $("ab-data");
    if (!src) return;
    if (typeof DecompressionStream === "undefined") {
      $("ab-status").textContent = "This browser cannot unpack the answers (no DecompressionStream); they are in answers.jsonl.";
      return;
    }
    inflate(src.textContent.trim()).then(browser, function (e) {
      $("ab-status").textContent = "The answers could not be read: " + e;
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
