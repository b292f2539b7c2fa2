/* Spot-AE OA front end: plain JS over the JSON API (/api/v1), no build step, no CDN.
 * Every value from the server goes into the page with textContent or SVG attributes, never
 * innerHTML, so a hostile string in a flow record cannot run script. */
"use strict";

const OA = (() => {
  const body = document.body;
  const csrf = () => document.querySelector('meta[name="csrf-token"]').content;
  const SVGNS = "http://www.w3.org/2000/svg";

  async function api(path, opts = {}) {
    const init = { credentials: "same-origin", headers: { Accept: "application/json" } };
    if (opts.json !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.headers["X-CSRF-Token"] = csrf();
      init.body = JSON.stringify(opts.json);
    }
    const r = await fetch("/api/v1" + path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { /* not JSON */ }
    if (r.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search); }
    if (!r.ok) throw new Error((data && data.message) || ("HTTP " + r.status));
    return data;
  }

  function el(tag, attrs = {}, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "on") for (const [ev, fn] of Object.entries(v)) e.addEventListener(ev, fn);
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  }

  function svg(tag, attrs = {}, ...kids) {
    const e = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") e.textContent = v; else if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    for (const k of kids) if (k) e.append(k);
    return e;
  }

  function toast(msg, bad = false) {
    const t = document.getElementById("toast");
    t.textContent = msg;
    t.className = "show" + (bad ? " bad" : "");
    clearTimeout(toast._t);
    toast._t = setTimeout(() => { t.className = ""; }, 3500);
  }

  const fmt = {
    int: (v) => (v === null || v === undefined ? "" : Number(v).toLocaleString("en-US")),
    score: (v) => (v === null || v === undefined ? "" : Number(v).toPrecision(5)),
    dur: (v) => (v === null || v === undefined ? "" : Number(v).toFixed(3)),
  };

  const SEV = { 1: "High", 2: "Medium", 3: "Low" };

  // Files the server could not read are listed by the API, never hidden: say so under the table.
  function unreadableNote(id, items) {
    const p = document.getElementById(id);
    if (!p || !items || !items.length) return;
    p.textContent = `${items.length} item(s) could not be read and are left out: ` +
      items.map((u) => `${u.file || u.day} (${u.reason})`).join("; ");
    p.hidden = false;
  }
  const flowKey = (r) => [r.treceived, r.sip, r.dip, r.sport, r.dport, r.ipkt, r.ibyt].join("|");
  const fbKey = (f) => [f.tstart, f.srcIP, f.dstIP, f.sport, f.dport, f.ipkt, f.ibyt].join("|");
  const nowIso = () => new Date().toISOString().slice(0, 19) + "Z"; // the server's `when` format

  // The day's verdicts: per flow (ml_feedback.csv, with when the store got it) and per incident.
  // A flow shows the newer of its own verdict and its incident's.
  async function verdicts(day) {
    const d = await api(`/days/${day}/feedback`);
    const flows = new Map(), incidents = new Map();
    for (const f of d.feedback) flows.set(fbKey(f), { sev: Number(f.sev), when: f.when || "" });
    for (const [id, v] of Object.entries(d.incidents || {})) incidents.set(id, { sev: v.sev, when: v.when });
    return { flows, incidents };
  }
  const noVerdicts = () => ({ flows: new Map(), incidents: new Map() });

  function shownSev(row, known) {
    const f = known.flows.get(flowKey(row)), i = row.incident_id ? known.incidents.get(row.incident_id) : undefined;
    if (f && i) return f.when >= i.when ? f.sev : i.sev;
    return (f || i || {}).sev;
  }

  function verdictCell(day, row, known) {
    if (row.rank === null || row.rank === undefined) return el("td", { class: "hint", text: "not flagged" });
    const td = el("td");
    const chosen = shownSev(row, known);
    if (body.dataset.role !== "analyst") {
      td.textContent = chosen ? SEV[chosen] : "";
      return td;
    }
    const box = el("span", { class: "verdict", "data-rank": row.rank, "data-sev": chosen || "" });
    for (const sev of [1, 2, 3]) {
      const b = el("button", {
        type: "button", class: `sev${sev}` + (chosen === sev ? " chosen" : ""), "data-sev": sev,
        title: `${SEV[sev]} risk` + (sev === 3 ? " (benign: the next ML run learns it)" : ""), text: SEV[sev][0],
      });
      b.addEventListener("click", async () => {
        try {
          const res = await api(`/days/${day}/feedback`, { json: { rank: row.rank, sev } });
          box.querySelectorAll("button").forEach((x) => x.classList.toggle("chosen", x === b));
          box.dataset.sev = sev;
          known.flows.set(flowKey(row), { sev, when: nowIso() });
          toast(`Rank ${res.rank} marked ${res.severity} risk`);
        } catch (e) { toast(e.message, true); }
      });
      box.append(b);
    }
    td.append(box);
    return td;
  }

  // -- days --------------------------------------------------------------------------------
  async function daysPage() {
    const tb = document.querySelector("#days-table tbody");
    try {
      const d = await api("/days");
      tb.replaceChildren();
      if (!d.days.length) tb.append(el("tr", {}, el("td", { colspan: 6, class: "hint", text: "No scored days yet: run `spot-ae ml-ops YYYYMMDD flow`." })));
      for (const x of d.days) {
        tb.append(el("tr", { "data-day": x.day },
          el("td", {}, el("a", { href: `/days/${x.day}`, class: "day-link", text: x.day })),
          el("td", { text: x.model || "" }),
          el("td", { class: "num", text: fmt.int(x.flows_scored) }),
          el("td", { class: "num", text: fmt.int(x.suspicious) }),
          el("td", { class: "num", text: fmt.score(x.threshold) }),
          el("td", { text: x.created || "" })));
      }
      unreadableNote("days-unreadable", d.unreadable);
    } catch (e) { tb.replaceChildren(el("tr", {}, el("td", { colspan: 6, class: "error", text: e.message }))); }
  }

  // -- drift banner and explanations (run.json "drift"; the expl* columns of the results) ---
  function driftBanner(m) {
    const b = document.getElementById("drift-banner");
    const d = m && m.drift;
    if (!b || !d || !d.drifted) return;
    b.textContent = `Drift: this day's score distribution differs from the training data (PSI ${d.score_psi.toFixed(2)} > ${d.limit}; ` +
      `largest feature shift: ${d.largest_feature || "?"}). The threshold's false-alarm rate may not hold: consider re-training.`;
    b.hidden = false;
  }

  function whyCell(r) {
    if (!r.expl1_feature) return el("td", { class: "hint", text: "" });
    const n = (v) => (v == null ? "?" : Number(v).toLocaleString(undefined, { maximumFractionDigits: 3 }));
    const parts = [1, 2, 3].filter((i) => r[`expl${i}_feature`])
      .map((i) => `${r[`expl${i}_feature`]} ${n(r[`expl${i}_value`])} (benign median ${n(r[`expl${i}_benign_median`])})`);
    return el("td", { class: "why", title: parts.join("\n"), text: parts[0] });
  }

  // -- suspicious connects -----------------------------------------------------------------
  const DESC_FIRST = new Set(["score", "tdur", "ipkt", "ibyt", "opkt", "obyt"]);

  async function suspiciousPage() {
    const day = body.dataset.day;
    const q = new URLSearchParams(location.search);
    const st = { sort: q.get("sort") || "rank", order: q.get("order") || "asc", page: Number(q.get("page") || 1) };
    const inputs = { ip: "#f-ip", port: "#f-port", proto: "#f-proto", min_score: "#f-min-score", max_rank: "#f-max-rank", size: "#f-size" };
    for (const [k, sel] of Object.entries(inputs)) if (q.get(k)) document.querySelector(sel).value = q.get(k);
    const tb = document.querySelector("#suspicious tbody");
    const errBox = document.getElementById("table-error");
    const showAl = document.getElementById("f-allowlisted");
    showAl.checked = q.get("allowlisted") === "show";
    showAl.addEventListener("change", () => { st.page = 1; load(); });
    let known = noVerdicts();
    try { known = await verdicts(day); } catch (e) { /* shown by the table load if storage is down */ }
    api(`/days/${day}/model`).then((m) => {
      document.getElementById("model-line").textContent =
        `${fmt.int(m.suspicious)} of ${fmt.int(m.flows_scored)} flows above the threshold ${fmt.score(m.threshold)} ` +
        `(${m.model}, ${m.threshold_mode}, trained on ${m.training_day || "?"}); most suspicious first.`;
      driftBanner(m);
    }).catch(() => {});

    function params() {
      const p = new URLSearchParams();
      for (const [k, sel] of Object.entries(inputs)) {
        const v = document.querySelector(sel).value.trim();
        if (v) p.set(k, v);
      }
      p.set("sort", st.sort); p.set("order", st.order); p.set("page", st.page);
      if (showAl.checked) p.set("allowlisted", "show");
      return p;
    }

    async function load() {
      const p = params();
      history.replaceState(null, "", `?${p}`);
      document.querySelectorAll("#suspicious th[data-sort]").forEach((th) => {
        th.classList.toggle("asc", th.dataset.sort === st.sort && st.order === "asc");
        th.classList.toggle("desc", th.dataset.sort === st.sort && st.order === "desc");
      });
      try {
        const d = await api(`/days/${day}/suspicious?${p}`);
        errBox.hidden = true;
        tb.replaceChildren();
        for (const r of d.rows) {
          const conn = `/days/${day}/connection?sip=${encodeURIComponent(r.sip)}&dip=${encodeURIComponent(r.dip)}`;
          tb.append(el("tr", { "data-rank": r.rank, class: r.allowlisted ? "allowlisted" : null, title: r.allowlisted ? `allow-listed by rule ${r.allowlisted}` : null },
            el("td", { class: "num", text: r.rank }),
            el("td", { text: r.treceived }),
            el("td", { class: "mono" }, el("a", { href: conn, class: "conn-link", text: r.sip })),
            el("td", { class: "num", text: r.sport }),
            el("td", { class: "mono" }, el("a", { href: conn, text: r.dip })),
            el("td", { class: "num", text: r.dport }),
            el("td", { text: r.proto }),
            el("td", { class: "num", text: fmt.dur(r.tdur) }),
            el("td", { class: "num", text: fmt.int(r.ipkt) }),
            el("td", { class: "num", text: fmt.int(r.ibyt) }),
            el("td", { class: "num", text: fmt.int(r.opkt) }),
            el("td", { class: "num", text: fmt.int(r.obyt) }),
            el("td", { class: "num score", text: fmt.score(r.score) }),
            whyCell(r),
            verdictCell(day, r, known),
            el("td", {}, r.incident_id ? el("a", { href: `/days/${day}/incidents/${r.incident_id}`, class: "incident-link", text: r.incident_id.slice(0, 8) }) : "")));
        }
        if (!d.rows.length) tb.append(el("tr", {}, el("td", { colspan: 16, class: "hint", text: "No suspicious flows match." })));
        allowlistNote(d.allowlist);
        document.getElementById("page-info").textContent = `Page ${d.page} of ${d.pages} · ${fmt.int(d.total)} flows`;
        document.getElementById("prev").disabled = d.page <= 1;
        document.getElementById("next").disabled = d.page >= d.pages;
        tb.parentElement.dataset.state = p.toString(); // what is shown: tests and bookmarks wait on it
      } catch (e) {
        errBox.textContent = e.message; errBox.hidden = false; tb.replaceChildren();
        tb.parentElement.dataset.state = "error";
      }
    }

    // Allow-listed flows are hidden (the API's default); say how many, by which rule and why.
    function allowlistNote(rules) {
      const note = document.getElementById("allowlist-note");
      const total = rules.reduce((a, r) => a + r.hidden, 0);
      note.hidden = total === 0;
      document.getElementById("allowlist-why").textContent = total === 0 ? "" :
        `${fmt.int(total)} suspicious flow${total === 1 ? " is" : "s are"} ${showAl.checked ? "marked" : "hidden"}: allow-listed by ` +
        rules.map((r) => `${r.rule} (${r.hidden}; ${r.who}: "${r.why}")`).join("; ") + ". ";
    }

    document.querySelectorAll("#suspicious th[data-sort]").forEach((th) => th.addEventListener("click", () => {
      const k = th.dataset.sort;
      if (st.sort === k) st.order = st.order === "asc" ? "desc" : "asc";
      else { st.sort = k; st.order = DESC_FIRST.has(k) ? "desc" : "asc"; }
      st.page = 1; load();
    }));
    document.getElementById("filters").addEventListener("submit", (ev) => { ev.preventDefault(); st.page = 1; load(); });
    document.getElementById("clear").addEventListener("click", () => {
      for (const [k, sel] of Object.entries(inputs)) if (k !== "size") document.querySelector(sel).value = "";
      st.page = 1; load();
    });
    document.getElementById("prev").addEventListener("click", () => { st.page -= 1; load(); });
    document.getElementById("next").addEventListener("click", () => { st.page += 1; load(); });
    load();
  }

  // -- connection details ------------------------------------------------------------------
  async function connectionPage() {
    const { day, sip, dip } = body.dataset;
    const tb = document.querySelector("#connection tbody");
    const summary = document.getElementById("conn-summary");
    try {
      const [d, known] = await Promise.all([
        api(`/days/${day}/connections?sip=${encodeURIComponent(sip)}&dip=${encodeURIComponent(dip)}`), verdicts(day)]);
      const sus = d.flows.filter((f) => f.suspicious).length;
      const bytes = d.flows.reduce((a, f) => a + (f.ibyt || 0) + (f.obyt || 0), 0);
      summary.textContent = `${fmt.int(d.count)} flow${d.count === 1 ? "" : "s"} between these hosts on ${day} (both directions), ${fmt.int(sus)} above the threshold, ${fmt.int(bytes)} bytes in all.` +
        (d.unreadable && d.unreadable.length ? ` ${d.unreadable.length} part file(s) could not be read: ${d.unreadable.map((u) => u.file).join(", ")}.` : "");
      for (const f of d.flows) {
        tb.append(el("tr", { class: (f.suspicious ? "sus" : "") + (f.allowlisted ? " allowlisted" : ""), "data-rank": f.rank ?? "",
          title: f.allowlisted ? `allow-listed by rule ${f.allowlisted}: never alerted` : null },
          el("td", { text: f.treceived }),
          el("td", { class: "mono", text: f.sip }), el("td", { class: "num", text: f.sport }),
          el("td", { class: "mono", text: f.dip }), el("td", { class: "num", text: f.dport }),
          el("td", { text: f.proto }), el("td", { class: "mono", text: f.flag ?? "" }),
          el("td", { class: "num", text: fmt.dur(f.tdur) }),
          el("td", { class: "num", text: fmt.int(f.ipkt) }), el("td", { class: "num", text: fmt.int(f.ibyt) }),
          el("td", { class: "num", text: fmt.int(f.opkt) }), el("td", { class: "num", text: fmt.int(f.obyt) }),
          el("td", { class: "num" }, f.suspicious ? el("span", { class: "badge sus", text: fmt.score(f.score) }) : fmt.score(f.score)),
          el("td", { class: "num", text: f.rank ?? "" }),
          verdictCell(day, f, known)));
      }
    } catch (e) { summary.textContent = e.message; summary.className = "error"; }
  }

  // -- network view ------------------------------------------------------------------------
  function layout(nodes, edges, W, H) {
    // Fruchterman-Reingold with gravity: repulsion between all nodes, springs on edges, a pull to
    // the centre so that separate pairs stay on screen; the step size cools over 300 rounds.
    const n = nodes.length, M = 30, R = 130;
    nodes.forEach((d, i) => {
      const a = (2 * Math.PI * i) / Math.max(1, n), r = Math.min(W, H) / 3;
      d.x = W / 2 + r * Math.cos(a); d.y = H / 2 + r * Math.sin(a);
    });
    const k = Math.sqrt(((W - M - R) * (H - 2 * M)) / Math.max(1, n)) * 0.75;
    let t = W / 10;
    const rounds = Math.round(Math.max(50, Math.min(300, 3e7 / (n * n + 1)))); // bounded work for big graphs
    for (let it = 0; it < rounds; it++) {
      for (const d of nodes) { d.dx = 0; d.dy = 0; }
      for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
        const a = nodes[i], b = nodes[j];
        let dx = a.x - b.x, dy = a.y - b.y, d = Math.sqrt(dx * dx + dy * dy);
        if (d < 0.01) { dx = Math.random() - 0.5; dy = Math.random() - 0.5; d = 0.5; }
        const f = (k * k) / d;
        a.dx += (dx / d) * f; a.dy += (dy / d) * f; b.dx -= (dx / d) * f; b.dy -= (dy / d) * f;
      }
      for (const e of edges) {
        const a = e.s, b = e.t, dx = a.x - b.x, dy = a.y - b.y, d = Math.sqrt(dx * dx + dy * dy) + 0.01;
        const f = (d * d) / k;
        a.dx -= (dx / d) * f; a.dy -= (dy / d) * f; b.dx += (dx / d) * f; b.dy += (dy / d) * f;
      }
      for (const d of nodes) {
        const gx = W / 2 - d.x, gy = H / 2 - d.y;
        d.dx += gx * 0.6 * k / 10; d.dy += gy * 0.6 * k / 10;
        const len = Math.sqrt(d.dx * d.dx + d.dy * d.dy) + 0.01, step = Math.min(len, t);
        d.x = Math.min(W - R, Math.max(M, d.x + (d.dx / len) * step));
        d.y = Math.min(H - M, Math.max(M, d.y + (d.dy / len) * step));
      }
      t = Math.max(1, t * Math.pow(0.01, 1 / rounds));
    }
  }

  function heat(t) { // 0 -> blue, 1 -> red
    const c = (a, b) => Math.round(a + (b - a) * t);
    return `rgb(${c(91, 211)},${c(141, 47)},${c(239, 47)})`;
  }

  async function networkPage() {
    const day = body.dataset.day;
    const svgEl = document.getElementById("network");
    const tip = document.getElementById("net-tip");
    const W = 960, H = 620;
    async function draw() {
      const top = document.getElementById("net-top").value || 100;
      let d;
      try { d = await api(`/days/${day}/network?top=${encodeURIComponent(top)}`); }
      catch (e) { document.getElementById("net-summary").textContent = e.message; return; }
      document.getElementById("net-summary").textContent =
        `${d.nodes.length} IPs, ${d.edges.length} connections from the top ${d.top} suspicious flows.`;
      const byId = new Map(d.nodes.map((n) => [n.id, n]));
      const edges = d.edges.map((e) => ({ ...e, s: byId.get(e.source), t: byId.get(e.target) }));
      layout(d.nodes, edges, W, H);
      const scores = edges.map((e) => e.score);
      const lo = Math.min(...scores), hi = Math.max(...scores);
      const norm = (s) => (hi > lo ? (d.higher_is_suspicious ? (s - lo) / (hi - lo) : (hi - s) / (hi - lo)) : 1);
      svgEl.replaceChildren();
      const gE = svg("g", { class: "edges" }), gN = svg("g", { class: "nodes" });
      svgEl.append(gE, gN);
      for (const e of edges) {
        const t = norm(e.score);
        e.line = svg("line", { class: "edge", stroke: heat(t), "stroke-width": (1 + 6 * t).toFixed(2), "stroke-opacity": 0.8,
          "data-source": e.source, "data-target": e.target });
        e.line.addEventListener("mousemove", (ev) => showTip(ev, `${e.source} → ${e.target}\nbest score ${fmt.score(e.score)}, ${e.flows} flow(s), best rank ${e.best_rank}`));
        e.line.addEventListener("mouseleave", () => { tip.hidden = true; });
        e.line.addEventListener("click", () => { location.href = `/days/${day}/connection?sip=${encodeURIComponent(e.source)}&dip=${encodeURIComponent(e.target)}`; });
        gE.append(e.line);
      }
      for (const n of d.nodes) {
        const r = 5 + Math.min(10, Math.sqrt(n.degree) * 2);
        n.g = svg("g", { class: "node " + (n.as_source ? "src" : "dst"), "data-ip": n.id });
        n.g.append(svg("circle", { r }), svg("text", { x: r + 3, y: 4, text: n.id }));
        n.g.addEventListener("mousemove", (ev) => showTip(ev, `${n.id}\n${n.degree} connection(s)`));
        n.g.addEventListener("mouseleave", () => { tip.hidden = true; });
        n.g.addEventListener("dblclick", () => { location.href = `/days/${day}/flows?ip=${encodeURIComponent(n.id)}`; });
        drag(n, edges);
        gN.append(n.g);
      }
      place(d.nodes, edges);
    }
    function place(nodes, edges) {
      for (const e of edges) { e.line.setAttribute("x1", e.s.x); e.line.setAttribute("y1", e.s.y); e.line.setAttribute("x2", e.t.x); e.line.setAttribute("y2", e.t.y); }
      for (const n of nodes) n.g.setAttribute("transform", `translate(${n.x},${n.y})`);
    }
    function toSvg(ev) {
      const p = svgEl.createSVGPoint(); p.x = ev.clientX; p.y = ev.clientY;
      return p.matrixTransform(svgEl.getScreenCTM().inverse());
    }
    function drag(n, edges) {
      let on = false, moved = false;
      n.g.addEventListener("pointerdown", (ev) => { on = true; moved = false; n.g.setPointerCapture(ev.pointerId); });
      n.g.addEventListener("pointermove", (ev) => {
        if (!on) return;
        const p = toSvg(ev); n.x = p.x; n.y = p.y; moved = true;
        n.g.setAttribute("transform", `translate(${n.x},${n.y})`);
        for (const e of edges) {
          if (e.s === n) { e.line.setAttribute("x1", n.x); e.line.setAttribute("y1", n.y); }
          if (e.t === n) { e.line.setAttribute("x2", n.x); e.line.setAttribute("y2", n.y); }
        }
      });
      n.g.addEventListener("pointerup", () => {
        on = false;
        if (!moved) location.href = `/days/${day}/flows?ip=${encodeURIComponent(n.id)}`;
      });
    }
    function showTip(ev, text) {
      const box = svgEl.parentElement.getBoundingClientRect();
      tip.textContent = text; tip.hidden = false;
      tip.style.left = ev.clientX - box.left + 12 + "px"; tip.style.top = ev.clientY - box.top + 12 + "px";
    }
    document.getElementById("net-form").addEventListener("submit", (ev) => { ev.preventDefault(); draw(); });
    draw();
  }

  // -- charts ------------------------------------------------------------------------------
  function barChart(svgEl, bars, opts) {
    // bars: [{x0, x1, y, label, over}] in data units; opts: {xlog, xLabel, yLabel, thr, thrLabel}
    const W = 960, H = 360, L = 70, R = 20, T = 20, B = 50;
    svgEl.replaceChildren();
    if (!bars.length) return;
    const fx = opts.xlog ? Math.log10 : (v) => v;
    const xmin = Math.min(fx(bars[0].x0), opts.thr !== undefined ? fx(opts.thr) : Infinity);
    const xmax = Math.max(fx(bars[bars.length - 1].x1), opts.thr !== undefined ? fx(opts.thr) : -Infinity);
    const ymax = Math.max(1, ...bars.map((b) => b.y));
    const fy = opts.ylog ? (v) => Math.log10(1 + v) : (v) => v;
    const X = (v) => L + ((fx(v) - xmin) / (xmax - xmin || 1)) * (W - L - R);
    const Y = (v) => H - B - (fy(v) / fy(ymax)) * (H - T - B);
    const g = svg("g");
    for (const b of bars) {
      const slot = Math.max(1, X(b.x1) - X(b.x0) - 1), w = Math.min(slot, opts.maxBar || Infinity);
      const x = X(b.x0) + (slot - w) / 2;
      const rect = svg("rect", { class: "bar" + (b.over ? " over" : ""), x, y: Y(b.y), width: w, height: H - B - Y(b.y) });
      rect.append(svg("title", { text: b.label }));
      g.append(rect);
    }
    const ax = svg("g", { class: "axis" });
    ax.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { x1: L, y1: T, x2: L, y2: H - B }));
    const yticks = [];
    if (opts.ylog) for (let v = 1; v <= ymax; v *= 10) yticks.push(v);
    else for (let i = 0; i <= 4; i++) yticks.push(Math.round((ymax * i) / 4));
    for (const v of [0, ...yticks.filter((v) => v > 0)]) {
      ax.append(svg("text", { x: L - 6, y: Y(v) + 4, "text-anchor": "end", text: fmt.int(v) }));
    }
    const ticks = opts.ticks || [];
    for (const t of ticks) ax.append(svg("text", { x: X(t.v), y: H - B + 16, "text-anchor": "middle", text: t.label }));
    ax.append(svg("text", { x: (L + W - R) / 2, y: H - 8, "text-anchor": "middle", text: opts.xLabel }));
    ax.append(svg("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, "text-anchor": "middle", text: opts.yLabel }));
    svgEl.append(g, ax);
    if (opts.thr !== undefined) {
      const x = X(opts.thr);
      svgEl.append(svg("line", { class: "thr", id: "threshold-line", x1: x, y1: T, x2: x, y2: H - B }),
        svg("text", { x: x + 6, y: T + 12, fill: "#c62828", text: opts.thrLabel }));
    }
  }

  async function modelPage() {
    const day = body.dataset.day;
    try {
      const m = await api(`/days/${day}/model`);
      const facts = document.getElementById("model-facts");
      const rows = [
        ["Model", `${m.model} (${m.model_version})`], ["Threshold", `${fmt.score(m.threshold)} (${m.threshold_mode})`],
        ["Suspicious when", m.higher_is_suspicious ? "score above the threshold" : "score below the threshold"],
        ["Training day", m.training_day || "unknown"], ["Flows scored", fmt.int(m.flows_scored)],
        ["Suspicious", fmt.int(m.suspicious)], ["Rejected rows", fmt.int(m.rejected)], ["Scored at", m.created],
      ];
      if (m.threshold_fitted_on) rows.push(["Threshold fitted on", m.threshold_fitted_on]);
      const r = m.threshold_resolution;
      if (r && r.fpr_interval_95) rows.push(["Benign false-alarm rate it promises",
        `${(100 * r.fpr_interval_95[0]).toFixed(2)}% to ${(100 * r.fpr_interval_95[1]).toFixed(2)}% (95% interval; ` +
        `${r.method}, ${fmt.int(r.benign_flows)} benign flows` +
        (r.resolves ? ")" : `: too few to resolve ${(100 * r.target_fpr).toFixed(2)}%)`)]);
      if (m.drift) rows.push(["Drift (score PSI)", `${m.drift.score_psi == null ? "n/a" : m.drift.score_psi.toFixed(3)} ` +
        `(limit ${m.drift.limit}${m.drift.drifted ? ", DRIFTED" : ""}; largest feature shift: ${m.drift.largest_feature || "?"})`]);
      driftBanner(m);
      if (m.labelled && m.labelled.attacks) rows.push(["Ground truth", `${fmt.int(m.labelled.attacks)} attack flows, recall ${(100 * m.labelled.recall).toFixed(1)}%` +
        (m.labelled.benign_fpr == null ? "" : `, benign FPR ${(100 * m.labelled.benign_fpr).toFixed(1)}%`) +
        (m.labelled.roc_auc == null ? "" : `, ROC-AUC ${m.labelled.roc_auc.toFixed(3)}, PR-AUC ${m.labelled.pr_auc.toFixed(3)}`)]);
      for (const [k, v] of rows) facts.append(el("dt", { text: k }), el("dd", { text: v ?? "" }));
      const h = m.score_histogram || { edges: [], counts: [] };
      const note = document.getElementById("hist-note");
      if (!h.counts || !h.counts.length) { note.textContent = "No score histogram in run.json."; return; }
      const xlog = h.scale === "log";
      const bars = h.counts.map((c, i) => ({
        x0: h.edges[i], x1: h.edges[i + 1], y: c,
        over: m.higher_is_suspicious ? h.edges[i] >= m.threshold : h.edges[i + 1] <= m.threshold,
        label: `${fmt.score(h.edges[i])} – ${fmt.score(h.edges[i + 1])}: ${fmt.int(c)} flows`,
      }));
      const e = h.edges, ticks = [];
      for (let i = 0; i < e.length; i += Math.ceil(e.length / 8)) ticks.push({ v: e[i], label: fmt.score(e[i]).replace(/0+$/, "") });
      note.textContent = `${fmt.int(h.counts.reduce((a, b) => a + b, 0))} flows in ${h.counts.length} bins` +
        (xlog ? " (score axis logarithmic)" : "") + "; bars past the dashed threshold line are flagged.";
      const logy = document.getElementById("hist-logy");
      const draw = () => barChart(document.getElementById("histogram"), bars, { xlog, ylog: logy.checked, thr: m.threshold,
        thrLabel: `threshold ${fmt.score(m.threshold)}`, xLabel: m.model === "lda" ? "score (word probability)" : "score (reconstruction error)",
        yLabel: logy.checked ? "flows (log scale)" : "flows", ticks });
      logy.addEventListener("change", draw);
      draw();
    } catch (e) { document.getElementById("hist-note").textContent = e.message; }
  }

  async function ingestPage() {
    const note = document.getElementById("ingest-note");
    try {
      const d = await api("/ingest/summary");
      if (!d.available) { note.textContent = "No ingest summary: nothing has been ingested on this cluster yet."; return; }
      note.textContent = `${fmt.int(d.total_flows)} flows ingested in ${d.hours.length} hour(s), from ${d.files} summary file(s).` +
        (d.unreadable.length ? ` ${d.unreadable.length} file(s) could not be read: ${d.unreadable.map((u) => u.file + " (" + u.reason + ")").join("; ")}` : "");
      const bars = d.hours.map((h, i) => ({ x0: i, x1: i + 1, y: h.flows, label: `${h.hour}:00 — ${fmt.int(h.flows)} flows` }));
      const step = Math.ceil(d.hours.length / 10) || 1, ticks = [];
      for (let i = 0; i < d.hours.length; i += step) ticks.push({ v: i + 0.5, label: d.hours[i].hour.replace("T", " ") + "h" });
      barChart(document.getElementById("ingest-chart"), bars, { xLabel: "hour (UTC)", yLabel: "flows", ticks, maxBar: 60 });
    } catch (e) { note.textContent = e.message; note.className = "error"; }
  }

  // -- verdicts (the store that spans days) and what each one changed ----------------------
  async function verdictsPage() {
    const tb = document.querySelector("#verdicts tbody");
    const pb = document.querySelector("#precision tbody");
    try {
      const d = await api("/verdicts");
      tb.replaceChildren();
      if (!d.verdicts.length) tb.append(el("tr", {}, el("td", { colspan: 9, class: "hint", text: "No verdicts yet: mark flows H/M/L on a day's suspicious list." })));
      for (const v of d.verdicts) {
        const runs = v.suppressed_in.map((r) => `${r.day} (${r.suppressed})`).join(", ");
        tb.append(el("tr", { "data-id": v.id },
          el("td", { text: v.when }), el("td", { text: v.who }),
          el("td", { class: `sev${v.sev}`, text: SEV[v.sev] + (v.family ? ` · ${v.family}` : "") + (v.in_training ? " · in training" : "") }),
          el("td", {}, `${v.sip} → ${v.dip}:${v.dport}/${v.proto}`, v.incident_id ? " · " : null,
            v.incident_id ? el("a", { href: `/days/${v.day}/incidents/${v.incident_id}`, class: "incident-link", text: "incident" }) : null),
          el("td", {}, el("a", { href: `/days/${v.day}`, text: v.day })),
          el("td", { text: v.expires || "never" }), el("td", { class: "in-force", text: v.in_force ? "yes" : "no" }),
          el("td", { class: "num suppressed", text: fmt.int(v.suppressed_alerts) }), el("td", { text: runs })));
      }
      pb.replaceChildren();
      for (const p of d.precision) {
        pb.append(el("tr", {}, el("td", { text: p.model_version }), el("td", { class: "num", text: fmt.int(p.confirmed) }),
          el("td", { class: "num", text: fmt.int(p.dismissed) }),
          el("td", { class: "num", text: p.precision === null ? "" : (100 * p.precision).toFixed(1) + "%" })));
      }
      unreadableNote("verdicts-unreadable", d.unreadable);
    } catch (e) { tb.replaceChildren(el("tr", {}, el("td", { colspan: 9, class: "error", text: e.message }))); }
  }

  // -- the allow-list: rules, add/remove (analysts), audit ----------------------------------
  async function allowlistPage() {
    const tb = document.querySelector("#allowlist tbody");
    const ab = document.querySelector("#allowlist-audit tbody");
    const analyst = body.dataset.role === "analyst";
    async function load() {
      try {
        const d = await api("/allowlist");
        tb.replaceChildren();
        if (!d.rules.length) tb.append(el("tr", {}, el("td", { colspan: 8, class: "hint", text: "No allow-list rules." })));
        for (const r of d.rules) {
          const gone = r.removed ? `no (removed ${r.removed.when} by ${r.removed.who}: ${r.removed.why})` : "yes";
          const btn = analyst && r.in_force ? el("button", { type: "button", class: "al-remove", "data-id": r.id, text: "Remove",
            on: { click: () => remove(r) } }) : "";
          tb.append(el("tr", { "data-id": r.id, class: r.in_force ? "" : "muted" },
            el("td", { text: r.when }), el("td", { text: r.who }), el("td", { class: "mono", text: r.describe }),
            el("td", { text: r.why }), el("td", { text: r.expires || "never" }), el("td", { class: "in-force", text: gone }),
            el("td", { class: "num held", text: fmt.int(r.held_alerts) }), el("td", {}, btn)));
        }
        ab.replaceChildren();
        for (const a of d.audit) {
          ab.append(el("tr", { "data-rule": a.rule_id, "data-action": a.action },
            el("td", { text: a.when }), el("td", { text: a.who }), el("td", { text: a.action }), el("td", { class: "mono", text: a.rule_id }),
            el("td", { text: a.why }), el("td", { class: "num", text: fmt.int(a.alerts_suppressed) }),
            el("td", { class: "num", text: fmt.int(a.alerts_restored) }),
            el("td", { text: a.days.map((x) => `${x.day} (-${x.suppressed}/+${x.restored})`).join(", ") })));
        }
        unreadableNote("allowlist-unreadable", d.unreadable);
        tb.parentElement.dataset.state = String(d.rules.length) + ":" + String(d.audit.length);
      } catch (e) { tb.replaceChildren(el("tr", {}, el("td", { colspan: 8, class: "error", text: e.message }))); }
    }
    // grouping needs Spark, which the OA does not run: say which days' incidents to regroup
    const regroupNote = (a) => (a.regroup && a.regroup.length
      ? `; incidents grouped before this change: spot-ae incidents ${a.regroup.join(" ")}` : "");
    async function remove(r) {
      const why = window.prompt(`Why may ${r.describe} alert again?`);
      if (!why) return;
      try {
        const d = await api("/allowlist/remove", { json: { id: r.id, why } });
        toast(`Removed: ${d.audit.alerts_restored} alert(s) restored${regroupNote(d.audit)}`);
      } catch (e) { toast(e.message, true); }
      load();
    }
    const form = document.getElementById("allowlist-form");
    if (form) form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const v = (id) => document.getElementById(id).value.trim() || null;
      const body = { src: v("al-src"), dst: v("al-dst"), sport: v("al-sport"), dport: v("al-dport"), proto: v("al-proto"),
        hours: v("al-hours"), both_ways: document.getElementById("al-both").checked, why: v("al-why") };
      const exp = v("al-expires");
      if (exp) body.expires_days = Number(exp);
      const err = document.getElementById("al-error");
      try {
        const d = await api("/allowlist", { json: body });
        err.hidden = true;
        toast(`Added ${d.rule.describe}: ${d.audit.alerts_suppressed} alert(s) suppressed${regroupNote(d.audit)}`);
        form.reset();
      } catch (e) { err.textContent = e.message; err.hidden = false; }
      load();
    });
    load();
  }

  // -- server-paged lists (incidents, an incident's flows, a host's incidents) ----------------
  // o: {path, table, info, prev, next, sort, order, row(r), noun, empty; optional form, clear,
  //     inputs {param: selector}, fixed {param: value}, descFirst, urlState, error, loaded(d)}
  function pagedList(o) {
    const q = new URLSearchParams(o.urlState ? location.search : "");
    const st = { sort: q.get("sort") || o.sort, order: q.get("order") || o.order, page: Number(q.get("page") || 1) };
    const inputs = o.inputs || {};
    for (const [k, sel] of Object.entries(inputs)) {
      const v = q.get(k), box = document.querySelector(sel);
      if (!v) continue;
      if (box.tagName === "SELECT" && ![...box.options].some((x) => x.value === v)) box.append(el("option", { value: v, text: v }));
      box.value = v;
    }
    const table = document.querySelector(o.table), tb = table.querySelector("tbody");
    const errBox = o.error ? document.querySelector(o.error) : null;
    function params() {
      const p = new URLSearchParams(o.fixed || {});
      for (const [k, sel] of Object.entries(inputs)) {
        const v = document.querySelector(sel).value.trim();
        if (v) p.set(k, v);
      }
      p.set("sort", st.sort); p.set("order", st.order); p.set("page", st.page);
      return p;
    }
    async function load() {
      const p = params();
      if (o.urlState) history.replaceState(null, "", `?${p}`);
      table.querySelectorAll("th[data-sort]").forEach((th) => {
        th.classList.toggle("asc", th.dataset.sort === st.sort && st.order === "asc");
        th.classList.toggle("desc", th.dataset.sort === st.sort && st.order === "desc");
      });
      try {
        const d = await api(`${o.path}?${p}`);
        if (errBox) errBox.hidden = true;
        tb.replaceChildren();
        for (const r of d.rows) tb.append(o.row(r));
        if (!d.rows.length) tb.append(el("tr", {}, el("td", { colspan: table.querySelectorAll("thead th").length, class: "hint", text: o.empty })));
        document.querySelector(o.info).textContent = `Page ${d.page} of ${d.pages} · ${fmt.int(d.total)} ${o.noun}`;
        document.querySelector(o.prev).disabled = d.page <= 1;
        document.querySelector(o.next).disabled = d.page >= d.pages;
        if (o.loaded) o.loaded(d);
        table.dataset.state = p.toString(); // what is shown: tests and bookmarks wait on it
      } catch (e) {
        if (errBox) { errBox.textContent = e.message; errBox.hidden = false; }
        tb.replaceChildren(el("tr", {}, el("td", { colspan: table.querySelectorAll("thead th").length, class: "error", text: e.message })));
        table.dataset.state = "error";
      }
    }
    table.querySelectorAll("th[data-sort]").forEach((th) => th.addEventListener("click", () => {
      const k = th.dataset.sort;
      if (st.sort === k) st.order = st.order === "asc" ? "desc" : "asc";
      else { st.sort = k; st.order = (o.descFirst || new Set()).has(k) ? "desc" : "asc"; }
      st.page = 1; load();
    }));
    if (o.form) document.querySelector(o.form).addEventListener("submit", (ev) => { ev.preventDefault(); st.page = 1; load(); });
    if (o.clear) document.querySelector(o.clear).addEventListener("click", () => {
      for (const [k, sel] of Object.entries(inputs)) if (k !== "size") document.querySelector(sel).value = "";
      st.page = 1; load();
    });
    document.querySelector(o.prev).addEventListener("click", () => { st.page -= 1; load(); });
    document.querySelector(o.next).addEventListener("click", () => { st.page += 1; load(); });
    load();
    return { load };
  }

  const utc = (t) => (t === null || t === undefined ? "" : new Date(t * 1000).toISOString().slice(0, 19).replace("T", " "));
  const family = (r) => (r.family || "unknown") + (r.family_confidence == null ? "" : ` (${Math.round(100 * r.family_confidence)}%)`);
  const hostHref = (day, ip) => `/days/${day}/hosts/${encodeURIComponent(ip)}`;
  const levelBadge = (r) => el("span", { class: `badge lvl-${r.severity_level}`, text: `${r.severity} ${r.severity_level}` });
  const verdictText = (v) => el("td", { class: v ? `sev${v.sev}` : "", text: v ? SEV[v.sev] : "" });

  // -- a day's incidents (the day page) ----------------------------------------------------
  async function incidentsPage() {
    const day = body.dataset.day;
    const famSel = document.getElementById("i-family");
    pagedList({
      path: `/days/${day}/incidents`, table: "#incidents", info: "#i-page-info", prev: "#i-prev", next: "#i-next",
      form: "#inc-filters", clear: "#i-clear", error: "#inc-error", urlState: true, sort: "severity", order: "desc",
      inputs: { host: "#i-host", family: "#i-family", level: "#i-level", min_severity: "#i-min-severity", size: "#i-size" },
      descFirst: new Set(["severity", "flows", "bytes", "max_score", "sum_score", "n_hosts", "n_ports", "family_confidence"]),
      noun: "incidents", empty: "No incidents match.",
      row: (r) => {
        const href = `/days/${day}/incidents/${r.incident_id}`;
        const tr = el("tr", { "data-id": r.incident_id, class: "clickable" },
          el("td", { class: "num" }, el("a", { href, class: "incident-link" }, levelBadge(r))),
          el("td", { class: "mono" }, r.main_host ? el("a", { href: hostHref(day, r.main_host), class: "host-link", text: r.main_host }) : "no address"),
          el("td", { text: r.main_role || "" }), el("td", { text: family(r) }),
          el("td", { text: utc(r.first_seen).slice(11), title: utc(r.first_seen) }), el("td", { text: utc(r.last_seen).slice(11), title: utc(r.last_seen) }),
          el("td", { class: "num", text: fmt.int(r.flows) }), el("td", { class: "num", text: fmt.int(r.n_hosts) }),
          el("td", { class: "num", text: fmt.int(r.n_ports) }), el("td", { class: "num", text: fmt.int(r.bytes) }),
          el("td", { class: "num score", text: fmt.score(r.max_score) }),
          el("td", { class: "why", text: r.top_explanations.map((e) => `${e.feature} (${e.flows})`).join(", ") }),
          verdictText(r.verdict));
        tr.addEventListener("click", (ev) => { if (!ev.target.closest("a")) location.href = href; });
        return tr;
      },
      loaded: (d) => {
        const s = d.summary || {};
        for (const f of Object.keys(s.by_family || {}).sort()) {
          if (![...famSel.options].some((x) => x.value === f)) famSel.append(el("option", { value: f, text: f }));
        }
        const gap = s.gap_seconds == null ? "" : ` (flows sharing a host within ${fmt.int(s.gap_seconds)} s)`;
        const held = s.allowlisted_flows
          ? ` Allow-list rules added since the grouping now cover ${fmt.int(s.allowlisted_flows)} of these flows` +
            ` (${fmt.int(s.allowlisted_incidents)} incident${s.allowlisted_incidents === 1 ? "" : "s"} entirely, not listed):` +
            ` they are left out until \`spot-ae incidents ${d.day}\` groups the day again.` : "";
        document.getElementById("inc-line").textContent = d.available
          ? `${fmt.int(s.incidents)} incidents from ${fmt.int(s.flows)} suspicious flows${gap}${s.streamed ? ", as the stream grouped them" : ""}; most severe first.${held}`
          : "No incidents were written for this day (scored before incidents existed): its flows are in the flow list.";
        document.getElementById("unassigned-note").textContent = d.unassigned
          ? `· ${fmt.int(d.unassigned)} suspicious flow${d.unassigned === 1 ? " is" : "s are"} in no incident (allow-listed or covered by a low-risk verdict): the flow list has them.` : "";
      },
    });
  }

  // -- charts of the incident and host pages (plain SVG) ------------------------------------
  function axes(svgEl, W, H, L, R, T, B, xt, yt, xLabel, yLabel) {
    const ax = svg("g", { class: "axis" });
    ax.append(svg("line", { x1: L, y1: H - B, x2: W - R, y2: H - B }), svg("line", { x1: L, y1: T, x2: L, y2: H - B }));
    for (const t of xt) ax.append(svg("text", { x: t.x, y: H - B + 16, "text-anchor": "middle", text: t.label }));
    for (const t of yt) ax.append(svg("text", { x: L - 6, y: t.y + 4, "text-anchor": "end", text: t.label }));
    ax.append(svg("text", { x: (L + W - R) / 2, y: H - 6, "text-anchor": "middle", text: xLabel }));
    ax.append(svg("text", { x: 14, y: (T + H - B) / 2, transform: `rotate(-90 14 ${(T + H - B) / 2})`, "text-anchor": "middle", text: yLabel }));
    svgEl.append(ax);
  }

  function timelineChart(svgEl, tl, thr) {
    const W = 960, H = 300, L = 70, R = 20, T = 16, B = 44;
    svgEl.replaceChildren();
    const items = tl.binned ? tl.bins.map((b) => ({ t: (b.t0 + b.t1) / 2, s: b.score, n: b.flows, label: `${utc(b.t0)} – ${utc(b.t1)}: ${fmt.int(b.flows)} flows, worst score ${fmt.score(b.score)}` }))
      : tl.points.map((p) => ({ t: p.t, s: p.score, n: 1, label: `${utc(p.t)} rank ${p.rank ?? "?"} ${p.sip} → ${p.dip}: score ${fmt.score(p.score)}` }));
    const pts = items.filter((p) => p.s !== null);
    if (!pts.length) { svgEl.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", text: "No member flow has a time." })); return; }
    let t0 = Math.min(...pts.map((p) => p.t)), t1 = Math.max(...pts.map((p) => p.t));
    if (t1 - t0 < 60) { t0 -= 30; t1 += 30; }
    const ss = pts.map((p) => p.s).concat(thr === null || thr === undefined ? [] : [thr]);
    let s0 = Math.min(...ss), s1 = Math.max(...ss);
    if (s1 - s0 < 1e-12) { s0 -= 0.5; s1 += 0.5; }
    const pad = (s1 - s0) * 0.05; s0 -= pad; s1 += pad;
    const X = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - R), Y = (s) => H - B - ((s - s0) / (s1 - s0)) * (H - T - B);
    const xt = [], yt = [];
    for (let i = 0; i <= 5; i++) { const t = t0 + ((t1 - t0) * i) / 5; xt.push({ x: X(t), label: utc(t).slice(t1 - t0 > 86400 ? 5 : 11, 16) }); }
    for (let i = 0; i <= 4; i++) { const s = s0 + ((s1 - s0) * i) / 4; yt.push({ y: Y(s), label: fmt.score(s) }); }
    axes(svgEl, W, H, L, R, T, B, xt, yt, "time (UTC)", tl.binned ? "worst score per time bin" : "score");
    if (thr !== null && thr !== undefined) {
      svgEl.append(svg("line", { class: "thr", x1: L, y1: Y(thr), x2: W - R, y2: Y(thr) }),
        svg("text", { x: W - R - 4, y: Y(thr) - 5, "text-anchor": "end", fill: "#c62828", text: `threshold ${fmt.score(thr)}` }));
    }
    const g = svg("g", { class: "points" });
    for (const p of pts) {
      const c = svg("circle", { class: "pt", cx: X(p.t), cy: Y(p.s), r: tl.binned ? 2 + Math.min(8, Math.log2(p.n)) : 3.5 });
      c.append(svg("title", { text: p.label }));
      g.append(c);
    }
    svgEl.append(g);
  }

  function hostsGraph(svgEl, gr, day) {
    // sources in the left column, targets in the right, busiest first; an edge per source -> target pair
    const srcs = gr.nodes.filter((n) => n.as_source > 0).sort((a, b) => b.as_source - a.as_source);
    const tgts = gr.nodes.filter((n) => n.as_target > 0).sort((a, b) => b.as_target - a.as_target);
    const W = 960, H = Math.max(140, Math.max(srcs.length, tgts.length) * 24 + 50), xs = 300, xt = 660;
    svgEl.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svgEl.replaceChildren();
    const y = (i, n) => 36 + ((i + 0.5) * (H - 50)) / n;
    const ys = new Map(srcs.map((n, i) => [n.id, y(i, srcs.length)])), yt = new Map(tgts.map((n, i) => [n.id, y(i, tgts.length)]));
    svgEl.append(svg("text", { x: xs, y: 18, "text-anchor": "middle", class: "col", text: "sources" }),
      svg("text", { x: xt, y: 18, "text-anchor": "middle", class: "col", text: "targets" }));
    const gE = svg("g");
    for (const e of gr.edges) {
      const line = svg("line", { class: "edge", x1: xs, y1: ys.get(e.source), x2: xt, y2: yt.get(e.target), "stroke-width": 1 + Math.min(6, Math.log2(e.flows)) });
      line.append(svg("title", { text: `${e.source} → ${e.target}: ${fmt.int(e.flows)} flows, worst score ${fmt.score(e.score)}` }));
      gE.append(line);
    }
    svgEl.append(gE);
    const node = (n, x, yy, side) => {
      const a = svg("a", { href: hostHref(day, n.id), class: `host-node ${side}`, "data-ip": n.id });
      const flows = side === "src" ? n.as_source : n.as_target;
      a.append(svg("circle", { cx: x, cy: yy, r: 5 + Math.min(6, Math.log2(1 + flows)) }),
        svg("text", { x: side === "src" ? x - 14 : x + 14, y: yy + 4, "text-anchor": side === "src" ? "end" : "start", text: `${n.id} (${fmt.int(flows)})` }));
      svgEl.append(a);
    };
    srcs.forEach((n) => node(n, xs, ys.get(n.id), "src"));
    tgts.forEach((n) => node(n, xt, yt.get(n.id), "dst"));
  }

  // -- one incident ----------------------------------------------------------------------
  async function incidentPage() {
    const { day, incident } = body.dataset;
    const base = `/days/${day}/incidents/${incident}`;
    const summary = document.getElementById("inc-summary");
    let known = noVerdicts();
    try { known = await verdicts(day); } catch (e) { /* the incident load says what is wrong */ }
    let d;
    try { d = await api(base); } catch (e) { summary.textContent = e.message; summary.className = "error"; return; }
    const inc = d.incident;
    summary.textContent = `${fmt.int(inc.flows)} suspicious flow${inc.flows === 1 ? "" : "s"} from ${utc(inc.first_seen) || "?"} to ${utc(inc.last_seen) || "?"} UTC; ` +
      `${fmt.int(inc.n_hosts)} host${inc.n_hosts === 1 ? "" : "s"} (${fmt.int(inc.n_sources)} source${inc.n_sources === 1 ? "" : "s"}, ${fmt.int(inc.n_targets)} target${inc.n_targets === 1 ? "" : "s"})` +
      (inc.main_host ? ` around ${inc.main_host} (${inc.main_role}).` : ".");
    const facts = document.getElementById("inc-facts");
    const dd = (k, ...v) => facts.append(el("dt", { text: k }), el("dd", {}, ...v));
    dd("Severity", levelBadge(inc));
    dd("Likely family", el("span", { id: "inc-family", text: family(inc) }));
    if (inc.main_host) dd("Main host", el("a", { href: hostHref(day, inc.main_host), class: "host-link mono", text: inc.main_host }), ` (${inc.main_role})`);
    dd("Top explanations", el("span", { id: "inc-explanations", text: inc.top_explanations.length
      ? inc.top_explanations.map((e) => `${e.feature} (${fmt.int(e.flows)} flow${e.flows === 1 ? "" : "s"})`).join(", ") : "none recorded" }));
    dd("Destination ports", inc.ports.slice(0, 10).map((p) => `${p.port} (${fmt.int(p.flows)})`).join(", ") + (inc.n_ports > 10 ? `, … ${fmt.int(inc.n_ports)} in all` : ""));
    dd("Bytes", fmt.int(inc.bytes));
    dd("Worst / summed score", `${fmt.score(d.higher_is_suspicious ? inc.max_score : inc.min_score)} / ${fmt.score(inc.sum_score)}`);
    dd("Model version", inc.model_version || "");
    dd("Incident id", el("span", { class: "mono", text: inc.incident_id }));

    const members = pagedList({
      path: `${base}/flows`, table: "#members", info: "#m-page-info", prev: "#m-prev", next: "#m-next", error: "#mem-error",
      sort: "rank", order: "asc", noun: "flows", empty: "No member flows.",
      descFirst: new Set(["score", "ipkt", "ibyt", "opkt", "obyt"]),
      row: (r) => {
        const conn = `/days/${day}/connection?sip=${encodeURIComponent(r.sip)}&dip=${encodeURIComponent(r.dip)}`;
        return el("tr", { "data-rank": r.rank },
          el("td", { class: "num", text: r.rank }), el("td", { text: r.treceived }),
          el("td", { class: "mono" }, el("a", { href: conn, class: "conn-link", text: r.sip })),
          el("td", { class: "num", text: r.sport }),
          el("td", { class: "mono" }, el("a", { href: conn, text: r.dip })),
          el("td", { class: "num", text: r.dport }), el("td", { text: r.proto }),
          el("td", { class: "num", text: fmt.int(r.ipkt) }), el("td", { class: "num", text: fmt.int(r.ibyt) }),
          el("td", { class: "num", text: fmt.int(r.opkt) }), el("td", { class: "num", text: fmt.int(r.obyt) }),
          el("td", { class: "num score", text: fmt.score(r.score) }),
          el("td", { class: "why", text: r.expl1_feature || "" }),
          verdictCell(day, r, known));
      },
    });

    const vbox = document.getElementById("inc-verdict");
    const cur = d.verdict;
    const named = (v) => (v && v.family ? `, ${v.family}` : "");
    const said = (v) => (v ? `${SEV[v.sev]} risk${named(v)} (${v.who}, ${v.when})` : "none yet");
    if (body.dataset.role !== "analyst") vbox.textContent = said(cur);
    else {
      const wrap = el("span", { class: "verdict", id: "inc-verdict-buttons", "data-sev": cur ? cur.sev : "" });
      const note = el("span", { class: "hint", id: "inc-verdict-note", text: ` ${said(cur)}` });
      // A confirmed attack (H or M) may name its family: `spot-ae train-family` learns it from these flows.
      const fam = el("select", { id: "inc-verdict-family", title: "the attack family, for a high or medium risk verdict" },
        el("option", { value: "", text: "family: not named" }),
        ...vbox.dataset.families.split(",").map((f) => el("option", { value: f, text: f })));
      if (cur && cur.family) fam.value = cur.family;
      for (const sev of [1, 2, 3]) {
        const b = el("button", { type: "button", id: `inc-sev${sev}`, class: `sev${sev}` + (cur && cur.sev === sev ? " chosen" : ""),
          "data-sev": sev, title: `${SEV[sev]} risk for all ${inc.flows} flows`, text: SEV[sev][0] });
        b.addEventListener("click", async () => {
          const family = sev === 3 ? null : fam.value || null;  // low risk is no attack: it names no family
          try {
            const res = await api(`${base}/verdict`, { json: family ? { sev, family } : { sev } });
            wrap.querySelectorAll("button").forEach((x) => x.classList.toggle("chosen", x === b));
            wrap.dataset.sev = sev;
            known.incidents.set(incident, { sev, when: nowIso() });
            note.textContent = ` ${SEV[sev]} risk${named(res)} (you, just now)`;
            toast(`Incident marked ${res.severity} risk${named(res)}: ${res.flows} flows, ${res.connections} connection(s)`);
            members.load();
          } catch (e) { toast(e.message, true); }
        });
        wrap.append(b);
      }
      vbox.append(wrap, " ", fam, note);
    }

    const tl = d.timeline;
    document.getElementById("timeline-note").textContent = (tl.binned ? `${fmt.int(tl.flows)} flows in time bins (each dot: a bin's worst score; larger = more flows).` :
      `${fmt.int(tl.flows)} flow${tl.flows === 1 ? "" : "s"}, each a dot.`) + (tl.untimed ? ` ${fmt.int(tl.untimed)} without a time are not drawn.` : "") +
      (d.threshold !== null ? " Dashed: the day's threshold." : "");
    timelineChart(document.getElementById("timeline"), tl, d.threshold);
    const gr = d.graph;
    document.getElementById("graph-note").textContent = gr.edges_total > gr.edges.length
      ? `The ${gr.edges.length} busiest of ${fmt.int(gr.edges_total)} source → target pairs (number: the host's flows in them).` : `${fmt.int(gr.edges_total)} source → target pair${gr.edges_total === 1 ? "" : "s"} (number: the host's flows).`;
    hostsGraph(document.getElementById("hosts-graph"), gr, day);
    document.getElementById("timeline").dataset.drawn = "1";
  }

  // -- one host: the day's ranking, its incidents, its history -------------------------------
  function trendChart(svgEl, days) {
    const W = 960, H = 240, L = 70, R = 20, T = 16, B = 44;
    svgEl.replaceChildren();
    const series = [["src_worst_score", "as source", "src"], ["dst_worst_score", "as target", "dst"]];
    const vals = days.flatMap((x) => series.map(([k]) => x[k])).filter((v) => v !== null && v !== undefined);
    if (!days.length || !vals.length) { svgEl.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", text: "No host ranking on any day." })); return; }
    let s0 = Math.min(...vals), s1 = Math.max(...vals);
    if (s1 - s0 < 1e-12) { s0 -= 0.5; s1 += 0.5; }
    const X = (i) => L + (days.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (days.length - 1));
    const Y = (s) => H - B - ((s - s0) / (s1 - s0)) * (H - T - B);
    const step = Math.ceil(days.length / 10);
    axes(svgEl, W, H, L, R, T, B, days.map((x, i) => ({ x: X(i), label: i % step ? "" : x.day })),
      [0, 1, 2, 3, 4].map((i) => ({ y: Y(s0 + ((s1 - s0) * i) / 4), label: fmt.score(s0 + ((s1 - s0) * i) / 4) })), "day", "worst score");
    for (const [k, name, cls] of series) {
      const pts = days.map((x, i) => [X(i), x[k]]).filter(([, v]) => v !== null && v !== undefined);
      if (pts.length > 1) svgEl.append(svg("polyline", { class: `trend ${cls}`, points: pts.map(([x, v]) => `${x},${Y(v)}`).join(" ") }));
      for (const [x, v] of pts) {
        const c = svg("circle", { class: `pt ${cls}`, cx: x, cy: Y(v), r: 4 });
        c.append(svg("title", { text: `${name}: ${fmt.score(v)}` }));
        svgEl.append(c);
      }
    }
    svgEl.append(svg("text", { x: W - R - 4, y: T + 10, "text-anchor": "end", class: "legend", text: "red: worst as source · blue: worst as target" }));
  }

  async function hostPage() {
    const { day, ip } = body.dataset;
    const summary = document.getElementById("host-summary");
    pagedList({
      path: `/days/${day}/incidents`, fixed: { host: ip, size: 25 }, table: "#host-incidents", info: "#h-page-info", prev: "#h-prev", next: "#h-next",
      sort: "severity", order: "desc", noun: "incidents", empty: "In no incident on this day.",
      row: (r) => el("tr", { "data-id": r.incident_id },
        el("td", { class: "num" }, el("a", { href: `/days/${day}/incidents/${r.incident_id}`, class: "incident-link" }, levelBadge(r))),
        el("td", { text: r.main_host === ip ? `main host (${r.main_role})` : `peer of ${r.main_host}` }),
        el("td", { text: family(r) }), el("td", { text: utc(r.first_seen) }),
        el("td", { class: "num", text: fmt.int(r.flows) }), el("td", { class: "num", text: fmt.int(r.n_hosts) }), verdictText(r.verdict)),
    });
    try {
      const d = await api(`/days/${day}/hosts/${encodeURIComponent(ip)}`);
      const r = d.ranking;
      summary.textContent = r ? `Rank ${fmt.int(r.host_rank)} of ${day}'s hosts: ${fmt.int(r.suspicious)} suspicious of ${fmt.int(r.flows)} flows, ` +
        `in ${fmt.int(r.n_incidents)} incident${r.n_incidents === 1 ? "" : "s"}` + (r.max_severity === null ? "." : ` (most severe ${r.max_severity}).`)
        : `Not in ${day}'s host ranking (the day has none, or no flow of this host).`;
      const rb = document.querySelector("#host-ranking tbody");
      if (r) for (const [p, name] of [["src", "source"], ["dst", "target"]]) {
        rb.append(el("tr", { "data-side": p }, el("td", { text: name }), el("td", { class: "num", text: fmt.int(r[`${p}_flows`]) }),
          el("td", { class: "num", text: fmt.int(r[`${p}_suspicious`]) }), el("td", { class: "num", text: fmt.score(r[`${p}_worst_score`]) }),
          el("td", { class: "num", text: fmt.score(r[`${p}_mean_score`]) })));
      }
      const days = d.history.days;
      trendChart(document.getElementById("host-trend"), days);
      const hb = document.querySelector("#host-history tbody");
      for (const x of days) {
        hb.append(el("tr", { "data-day": x.day }, el("td", {}, el("a", { href: hostHref(x.day, ip), text: x.day })),
          el("td", { class: "num", text: fmt.int(x.host_rank) }), el("td", { class: "num", text: fmt.int(x.src_suspicious) }),
          el("td", { class: "num", text: fmt.int(x.dst_suspicious) }), el("td", { class: "num", text: fmt.score(x.src_worst_score) }),
          el("td", { class: "num", text: fmt.score(x.dst_worst_score) }), el("td", { class: "num", text: fmt.int(x.n_incidents) }),
          el("td", { class: "num", text: x.max_severity ?? "" })));
      }
      const vb = document.querySelector("#host-verdicts tbody");
      for (const v of d.history.verdicts) {
        vb.append(el("tr", { "data-id": v.id }, el("td", { text: v.when }), el("td", { text: v.who }),
          el("td", { class: `sev${v.sev}`, text: SEV[v.sev] }), el("td", { text: `${v.sip} → ${v.dip}:${v.dport}/${v.proto}` }),
          el("td", {}, el("a", { href: `/days/${v.day}`, text: v.day }))));
      }
      if (!d.history.verdicts.length) vb.append(el("tr", {}, el("td", { colspan: 5, class: "hint", text: "No verdicts on its connections." })));
      unreadableNote("host-unreadable", d.history.unreadable);
      document.getElementById("host-history").dataset.state = "loaded";
    } catch (e) { summary.textContent = e.message; summary.className = "error"; }
  }

  const pages = { incidents: incidentsPage, incident: incidentPage, host: hostPage, allowlist: allowlistPage, verdicts: verdictsPage, days: daysPage, suspicious: suspiciousPage, connection: connectionPage, network: networkPage, model: modelPage, ingest: ingestPage };
  return { start: () => (pages[body.dataset.page] || (() => {}))() };
})();

document.addEventListener("DOMContentLoaded", OA.start);
