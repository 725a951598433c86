"use strict";
// Herder dashboard. Every value from the server goes through textContent (never innerHTML).
// The token lives in sessionStorage and travels only in the Authorization header.
(() => {
  const view = document.getElementById("view");
  const statusEl = document.getElementById("status");
  let token = sessionStorage.getItem("herder-token") || "";
  let timer = null;       // the current view's refresh timer
  let stream = null;      // the current view's live feed (AbortController)
  let config = { read_auth: false, ops: false };

  // A token handed over in the URL fragment (`herder dashboard` prints it) is moved into the
  // tab's storage and removed from the address bar and history at once.
  const m = location.hash.match(/[#&]token=([^&]+)/);
  if (m) {
    token = decodeURIComponent(m[1]);
    sessionStorage.setItem("herder-token", token);
    history.replaceState(null, "", location.pathname + "#/");
  }

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = String(v);
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      e.appendChild(typeof kid === "string" || typeof kid === "number" ? document.createTextNode(String(kid)) : kid);
    }
    return e;
  }
  // replaceChildren turns null into the text "null": drop absent parts first.
  const fill = (node, ...kids) => node.replaceChildren(...kids.filter(k => k !== null && k !== undefined));
  const enc = encodeURIComponent;
  const fmtTime = t => (t ? new Date(t * 1000).toLocaleString() : "");
  // A job not claimed yet may carry no limit of its own: the claiming worker's task sets it.
  const attemptsText = j => `${j.attempts ?? 0}/${j.max_attempts || "–"}`;
  // Attempt times are seconds (written by the worker) or milliseconds (written by Lua).
  const sec = t => (typeof t === "number" && t > 1e11 ? t / 1000 : t);
  const ago = t => (t ? Math.max(0, (Date.now() / 1000 - t)).toFixed(1) + " s ago" : "");

  function askToken() {
    return new Promise(resolve => {
      const d = document.getElementById("token-dialog");
      const input = document.getElementById("token-input");
      input.value = "";
      d.addEventListener("close", () => {
        if (input.value) { token = input.value.trim(); sessionStorage.setItem("herder-token", token); }
        resolve(token);
      }, { once: true });
      d.showModal();
    });
  }
  document.getElementById("token-btn").addEventListener("click", () => askToken().then(route));

  function headers(extra) {
    const h = Object.assign({}, extra || {});
    if (token) h.Authorization = "Bearer " + token;
    return h;
  }

  async function api(path, method = "GET", body) {
    const opts = { method, headers: headers(body ? { "Content-Type": "application/json" } : {}) };
    if (body) opts.body = JSON.stringify(body);
    const res = await fetch(path, opts);
    if (res.status === 401) {
      await askToken();
      if (token) return api(path, method, body);
    }
    const data = await res.json().catch(() => ({ detail: res.statusText }));
    if (!res.ok) throw new Error(typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || res.statusText));
    return data;
  }

  async function act(path, body) {
    try { const r = await api(path, "POST", body); say("done: " + path.split("/").pop()); return r; }
    catch (e) { say("error: " + e.message, true); return null; }
  }

  function say(text, bad) {
    statusEl.textContent = text;
    statusEl.className = "status" + (bad ? " error" : "");
  }

  function every(ms, fn) {
    fn();
    timer = setInterval(fn, ms);
  }

  function stop() {
    if (timer) clearInterval(timer);
    timer = null;
    if (stream) stream.abort();
    stream = null;
  }

  // ---- queues -----------------------------------------------------------------------------

  function queuesView(params) {
    const offset = parseInt(params.get("offset") || "0", 10) || 0;
    const q = params.get("q") || "";
    const search = el("input", { id: "queue-search", placeholder: "filter queues", value: q });
    const form = el("form", { class: "toolbar", onsubmit: e => { e.preventDefault(); location.hash = "#/?q=" + enc(search.value); } }, search, el("button", { text: "Filter" }));
    const body = el("tbody");
    const pager = el("div", { class: "pager" });
    view.replaceChildren(el("section", {}, el("h2", { text: "Queues" }), form,
      el("table", { id: "queues" }, el("thead", {}, el("tr", {}, ...["queue", "ready", "scheduled", "waiting", "active", "dead", "workers", "capacity", "in flight", "succeeded", "state", ""].map(h => el("th", { text: h })))), body), pager));
    every(2000, async () => {
      try {
        const data = await api(`/api/queues?offset=${offset}&limit=50&q=${enc(q)}`);
        body.replaceChildren(...data.items.map(s => el("tr", { "data-queue": s.queue },
          el("td", {}, el("a", { href: "#/queue/" + enc(s.queue), text: s.queue })),
          ...["ready", "scheduled", "waiting", "active", "dead"].map(k => el("td", { class: "num " + k, text: s[k] })),
          el("td", { class: "num", text: s.workers }), el("td", { class: "num", text: s.capacity }),
          el("td", { class: "num", text: s.in_flight }), el("td", { class: "num", text: s.counters.succeeded || 0 }),
          el("td", { class: s.paused ? "paused state" : "state", text: s.paused ? "paused" : "running" }),
          el("td", {}, el("button", { text: s.paused ? "Resume" : "Pause", onclick: async () => { await act(`/api/queues/${enc(s.queue)}/${s.paused ? "resume" : "pause"}`); route(); } })))));
        fill(pager, 
          el("span", { class: "muted", text: `${data.total ? offset + 1 : 0}–${offset + data.items.length} of ${data.total}` }),
          offset > 0 ? el("a", { href: `#/?q=${enc(q)}&offset=${Math.max(0, offset - 50)}`, text: "‹ prev" }) : null,
          offset + 50 < data.total ? el("a", { href: `#/?q=${enc(q)}&offset=${offset + 50}`, text: "next ›" }) : null);
        say("updated " + new Date().toLocaleTimeString());
      } catch (e) { say("error: " + e.message, true); }
    });
  }

  // ---- one queue: jobs by state, workers, cron --------------------------------------------

  const STATES = ["ready", "scheduled", "waiting", "active", "dead", "succeeded", "cancelled"];

  function queueView(queue, state, params) {
    state = STATES.includes(state) ? state : "ready";
    const cursor = parseInt(params.get("cursor") || "0", 10) || 0;
    const filt = {};
    for (const k of ["task", "label", "worker", "text"]) if (params.get(k)) filt[k] = params.get(k);
    const qs = o => Object.entries(o).map(([k, v]) => `${k}=${enc(v)}`).join("&");
    const base = `#/queue/${enc(queue)}/${state}`;
    const tabs = el("div", { class: "tabs", id: "state-tabs" });
    const inputs = {};
    const filterForm = el("form", { class: "toolbar", id: "job-filter", onsubmit: e => {
      e.preventDefault();
      const f = {};
      for (const [k, i] of Object.entries(inputs)) if (i.value.trim()) f[k] = i.value.trim();
      location.hash = base + "?" + qs(f);
    } }, ...["task", "label", "worker", "text"].map(k => (inputs[k] = el("input", { name: k, placeholder: k === "text" ? "id contains" : k === "label" ? "label key=value" : k, value: filt[k] || "", size: 14 }))),
      el("button", { text: "Filter" }));
    const selected = new Set();
    const all = el("input", { type: "checkbox", "aria-label": "select all" });
    const body = el("tbody");
    const pager = el("div", { class: "pager" });
    const bulk = action => async () => {
      if (!selected.size) return;
      const r = await act(`/api/queues/${enc(queue)}/jobs/bulk`, { action, ids: [...selected] });
      if (r) say(`${action}: ${r.done} of ${r.requested} done`);
      selected.clear(); load();
    };
    const bulkAll = action => async () => {
      if (!confirm(`${action} every ${state} job matching this filter (up to 10000)?`)) return;
      const r = await act(`/api/queues/${enc(queue)}/jobs/bulk`, Object.assign({ action, state }, filt));
      if (r) say(`${action}: ${r.done} of ${r.requested} done`);
      load();
    };
    const pauseBtn = el("button", { id: "pause-btn", text: "Pause" });
    const workersBody = el("tbody");
    const cronBody = el("tbody");
    const trendsEl = el("div", { class: "charts" });
    let trendsAt = 0;
    view.replaceChildren(
      el("section", {},
        el("h2", {}, "Queue ", el("span", { id: "queue-name", text: queue }), " ", pauseBtn),
        tabs, filterForm,
        el("div", { class: "toolbar" },
          el("span", { class: "muted", text: "selection:" }),
          el("button", { id: "bulk-retry", text: "Retry", onclick: bulk("retry") }),
          el("button", { id: "bulk-cancel", text: "Cancel", onclick: bulk("cancel") }),
          el("button", { id: "bulk-remove", text: "Remove", onclick: bulk("remove") }),
          el("span", { class: "muted", text: "all matching:" }),
          el("button", { id: "bulk-all-retry", text: "Retry all", onclick: bulkAll("retry") }),
          el("button", { id: "bulk-all-cancel", text: "Cancel all", onclick: bulkAll("cancel") }),
          el("button", { id: "bulk-all-remove", text: "Remove all", onclick: bulkAll("remove") })),
        el("table", { id: "jobs" }, el("thead", {}, el("tr", {}, el("th", {}, all), ...["job", "task", "state", "attempts", "worker", "enqueued", "finished", "reason"].map(h => el("th", { text: h })))), body),
        pager),
      el("section", {}, el("h2", { text: "Workers" }),
        el("table", { id: "workers" }, el("thead", {}, el("tr", {}, ...["worker", "host / pod", "version", "in flight", "capacity", "load", "jobs", "draining", "last seen", ""].map(h => el("th", { text: h })))), workersBody)),
      el("section", { id: "trends" }, el("h2", {}, "Trends ", el("span", { class: "muted", text: "(per minute, last 3 hours, from Redis)" })), trendsEl),
      el("section", {}, el("h2", { text: "Cron" }),
        el("table", { id: "cron" }, el("thead", {}, el("tr", {}, ...["task", "expression", "next ticks", "last runs"].map(h => el("th", { text: h })))), cronBody)));
    all.addEventListener("change", () => {
      body.querySelectorAll("input[type=checkbox]").forEach(c => { c.checked = all.checked; c.dispatchEvent(new Event("change")); });
    });

    async function load() {
      try {
        const data = await api(`/api/queues/${enc(queue)}/jobs?state=${state}&cursor=${cursor}&limit=50&${qs(filt)}`);
        tabs.replaceChildren(...STATES.map(s => el("a", { href: `#/queue/${enc(queue)}/${s}`, class: s === state ? "on" : "", "data-state": s, text: `${s} ${data.counts[s]}` })));
        body.replaceChildren(...data.items.map(j => {
          const box = el("input", { type: "checkbox", "aria-label": "select " + j.id });
          box.checked = selected.has(j.id);
          box.addEventListener("change", () => { if (box.checked) selected.add(j.id); else selected.delete(j.id); });
          return el("tr", { "data-job": j.id }, el("td", {}, box),
            el("td", {}, el("a", { href: `#/job/${enc(queue)}/${enc(j.id)}`, text: j.id })),
            el("td", { text: j.task }), el("td", { class: "st-" + j.state, text: j.state }),
            el("td", { class: "num", text: attemptsText(j) }), el("td", { text: j.worker || "" }),
            el("td", { text: fmtTime(j.enqueued_at) }), el("td", { text: fmtTime(j.finished_at) }),
            el("td", { class: "reason", text: j.dead_reason || "" }));
        }));
        const more = data.next_cursor !== null && data.next_cursor !== undefined;
        fill(pager, 
          el("span", { class: "muted", text: `${data.items.length} shown of ${data.total} ${state}` + (Object.keys(filt).length ? ` (searched ${data.scanned})` : "") }),
          cursor > 0 ? el("a", { href: base + "?" + qs(filt), text: "« first" }) : null,
          more ? el("a", { id: "next-page", href: base + "?" + qs(Object.assign({}, filt, { cursor: data.next_cursor })), text: "next ›" }) : null);
        const st = await api(`/api/queues/${enc(queue)}`);
        pauseBtn.textContent = st.paused ? "Resume" : "Pause";
        pauseBtn.onclick = async () => { await act(`/api/queues/${enc(queue)}/${st.paused ? "resume" : "pause"}`); load(); };
        workersBody.replaceChildren(...st.workers.map(w => {
          const bar = el("span", { class: "bar" });
          bar.style.width = Math.round(80 * (w.capacity ? w.in_flight / w.capacity : 0)) + "px";
          return el("tr", { "data-worker": w.id }, el("td", { text: w.id }), el("td", { text: w.pod || w.host }), el("td", { text: w.version }),
            el("td", { class: "num", text: w.in_flight }), el("td", { class: "num", text: w.capacity }), el("td", {}, bar),
            el("td", {}, ...w.jobs.slice(0, 20).map(id => el("a", { href: `#/job/${enc(queue)}/${enc(id)}`, text: id + " " }))),
            el("td", { text: w.draining ? (w.drained ? "drained" : "draining") : "" }), el("td", { text: ago(w.last_seen) }),
            el("td", {}, el("button", { text: w.draining ? "Undrain" : "Drain", onclick: async () => { await act(`/api/queues/${enc(queue)}/workers/${enc(w.id)}/${w.draining ? "undrain" : "drain"}`); load(); } })));
        }));
        if (Date.now() - trendsAt > 20000) {
          trendsAt = Date.now();
          drawTrends(trendsEl, (await api(`/api/queues/${enc(queue)}/trends?minutes=180`)).series);
        }
        const crons = await api(`/api/queues/${enc(queue)}/cron`);
        cronBody.replaceChildren(...crons.map(c => el("tr", {}, el("td", { text: c.task }), el("td", {}, el("code", { text: c.cron })),
          el("td", { text: c.next.slice(0, 3).map(fmtTime).join(", ") }),
          el("td", {}, ...c.last.map(r => el("div", {}, el("a", { href: `#/job/${enc(queue)}/${enc(r.id)}`, text: fmtTime(r.tick) }), " ", el("span", { class: "st-" + (r.state || ""), text: r.state || "not run" })))))));
        say("updated " + new Date().toLocaleTimeString());
      } catch (e) { say("error: " + e.message, true); }
    }
    every(3000, load);
  }

  // ---- trends (uPlot, vendored) ------------------------------------------------------------

  const CHARTS = [
    { id: "chart-rates", title: "jobs per minute", series: [["enqueued", "#3451b2"], ["succeeded", "#157f3b"], ["retried", "#b25e09"], ["dead", "#b42318"], ["cancelled", "#6b7385"]] },
    { id: "chart-depth", title: "depth", series: [["ready", "#3451b2"], ["scheduled", "#7a3db8"], ["waiting", "#6b7385"], ["active", "#157f3b"], ["deadq", "#b42318"]] },
    { id: "chart-wait", title: "wait of next jobs (s)", scale: 0.001, series: [["wait_p50_ms", "#3451b2"], ["wait_p95_ms", "#b25e09"]] },
    { id: "chart-workers", title: "workers and utilisation", series: [["workers", "#3451b2"], ["in_flight", "#157f3b"], ["capacity", "#6b7385"], ["utilisation", "#b25e09", "util"]] },
  ];

  function drawTrends(target, data) {
    if (typeof uPlot === "undefined") return;
    const samples = data.t.filter((_, i) => data.ready[i] !== null).length;
    target.replaceChildren(el("p", { class: "muted", id: "trend-samples", text: samples ? `${samples} samples` : "no samples yet (workers record one a minute)" }));
    const width = Math.max(300, Math.min(560, (target.clientWidth || 1100) / 2 - 20));
    for (const c of CHARTS) {
      const box = el("div", { class: "chart", id: c.id });
      target.appendChild(box);
      const cols = [data.t, ...c.series.map(([k]) => data[k].map(v => (v === null ? null : v * (c.scale || 1))))];
      const hasUtil = c.series.some(s => s[2] === "util");
      new uPlot({
        title: c.title, width, height: 180,
        scales: { x: { time: true }, util: { range: [0, 1] } },
        axes: [{}, {}, ...(hasUtil ? [{ scale: "util", side: 1, grid: { show: false } }] : [])],
        series: [{}, ...c.series.map(([k, color, scale]) => ({ label: k, stroke: color, width: 1.5, scale: scale || "y", spanGaps: false }))],
      }, cols, box);
    }
  }

  // ---- one job ----------------------------------------------------------------------------

  function jsonBlock(value, link, truncated) {
    const pre = el("pre", { text: value === undefined ? "" : JSON.stringify(value, null, 2) });
    if (!truncated) return pre;
    return el("div", {}, el("p", { class: "muted" }, "Shown cut to a preview. ", el("a", { href: link, class: "download", text: "Download full" })), pre);
  }

  function drawGraph(g, self, queue) {
    const ns = "http://www.w3.org/2000/svg";
    const mk = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v)); return e; };
    const cols = {};
    for (const n of g.nodes) (cols[n.depth] = cols[n.depth] || []).push(n);
    const depths = Object.keys(cols).map(Number).sort((a, b) => a - b);
    const W = 190, H = 34, pos = {};
    depths.forEach((d, ci) => cols[d].forEach((n, ri) => { pos[n.id] = [10 + ci * (W + 40), 10 + ri * (H + 12)]; }));
    const rows = Math.max(1, ...depths.map(d => cols[d].length));
    const svg = mk("svg", { class: "graph", width: 20 + depths.length * (W + 40), height: 20 + rows * (H + 12) });
    for (const [a, b] of g.edges) {
      if (!pos[a] || !pos[b]) continue;
      svg.appendChild(mk("line", { x1: pos[a][0] + W, y1: pos[a][1] + H / 2, x2: pos[b][0], y2: pos[b][1] + H / 2 }));
    }
    for (const n of g.nodes) {
      const [x, y] = pos[n.id];
      const a = mk("a", { href: `#/job/${enc(queue)}/${enc(n.id)}` });
      a.appendChild(mk("rect", { x, y, width: W, height: H, rx: 4, class: n.id === self ? "self" : "" }));
      const t1 = mk("text", { x: x + 6, y: y + 14 }); t1.textContent = n.id.slice(0, 28);
      const t2 = mk("text", { x: x + 6, y: y + 28, class: "st-" + n.state }); t2.textContent = `${n.task} · ${n.state}`;
      a.append(t1, t2);
      svg.appendChild(a);
    }
    return svg;
  }

  // One stream-json (or Herder) log event as a feed line.
  function feedLine(ev) {
    const line = (cls, k, text) => el("div", { class: "ev " + cls }, el("span", { class: "k", text: k }), el("span", { text }));
    if (!ev || typeof ev !== "object") return line("", "event", JSON.stringify(ev));
    if (ev._truncated) return line("err", "event (cut)", `${ev.bytes} bytes: ${ev.preview.slice(0, 300)}`);
    const t = ev.type, st = ev.subtype;
    if (t === "system" && st === "init") return line("sys", "init", `model ${ev.model || "?"} · session ${ev.session_id || "?"} · CLI ${ev.claude_code_version || "?"}`);
    if (t === "system" && st === "api_retry") return line("retry", "API retry", `attempt ${ev.attempt}/${ev.max_retries}: ${ev.error || ""} (${ev.error_status || ""})`);
    if (t === "assistant") {
      const parts = [];
      const content = (ev.message && Array.isArray(ev.message.content)) ? ev.message.content : [];
      for (const b of content) {
        if (b.type === "text") parts.push(line("assistant", "assistant", b.text));
        else if (b.type === "tool_use") parts.push(line("tool", "tool " + b.name, JSON.stringify(b.input)));
        else if (b.type === "thinking") parts.push(line("assistant", "thinking", b.thinking || ""));
      }
      if (ev.error || ev.api_error) parts.push(line("err", "API error", String(ev.error || ev.api_error)));
      return parts.length ? el("div", {}, ...parts) : line("assistant", "assistant", "");
    }
    if (t === "user") {
      const content = (ev.message && Array.isArray(ev.message.content)) ? ev.message.content : [];
      const r = content.find(b => b.type === "tool_result");
      const text = r ? (typeof r.content === "string" ? r.content : JSON.stringify(r.content)) : "";
      return line(r && r.is_error ? "err" : "toolres", "tool result", text.slice(0, 2000));
    }
    if (t === "result") {
      const denials = Array.isArray(ev.permission_denials) ? ev.permission_denials : [];
      return el("div", {}, line(ev.is_error ? "err" : "result", "result " + (st || ""), String(ev.result || "")),
        ...denials.map(d => line("denied", "permission denied", `${d.tool_name || ""} ${JSON.stringify(d.tool_input || {})}`)));
    }
    if (t === "herder") return line("sys", "herder " + (st || ""), JSON.stringify(ev));
    return line("", t || "event", JSON.stringify(ev).slice(0, 2000));
  }

  // Server-sent events read through fetch, so the token goes in a header (EventSource cannot
  // send one). Reconnects with Last-Event-ID; the server resumes the log from there.
  async function follow(path, onEvent, ctl) {
    let last = "";
    while (!ctl.signal.aborted) {
      try {
        const res = await fetch(path, { headers: headers(last ? { "Last-Event-ID": last } : {}), signal: ctl.signal });
        if (!res.ok) throw new Error((await res.json().catch(() => ({}))).detail || res.statusText);
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = "", ended = false;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += dec.decode(value, { stream: true });
          let i;
          while ((i = buf.indexOf("\n\n")) >= 0) {
            const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
            let kind = "message", data = "", id = null;
            for (const ln of chunk.split("\n")) {
              if (ln.startsWith("event: ")) kind = ln.slice(7);
              else if (ln.startsWith("data: ")) data += ln.slice(6);
              else if (ln.startsWith("id: ")) id = ln.slice(4);
            }
            if (id !== null) last = id;
            if (data) onEvent(kind, JSON.parse(data));
            if (kind === "end" || kind === "gone") ended = true;
          }
        }
        if (ended) return;
      } catch (e) {
        if (ctl.signal.aborted) return;
        say("live feed: " + e.message + " (reconnecting)", true);
      }
      await new Promise(r => setTimeout(r, 1000));
    }
  }

  async function jobView(queue, id) {
    const qp = "?queue=" + enc(queue);
    const jpath = `/api/jobs/${enc(id)}`;
    let j;
    try { j = await api(jpath + qp); }
    catch (e) { view.replaceChildren(el("section", {}, el("h2", { text: "Job " + id }), el("p", { class: "error", id: "job-error", text: e.message }))); return; }
    const stateEl = el("span", { id: "job-state", class: "st-" + j.state, text: j.state });
    const liveEl = el("span", { class: "live", id: "live" });
    const kv = (pairs) => el("dl", { class: "kv" }, ...pairs.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v === null || v === undefined ? "" : String(v) })]));
    const facts = el("div");
    const renderFacts = () => facts.replaceChildren(kv([["queue", queue], ["task", j.task], ["attempts", attemptsText(j)], ["priority", j.priority], ["worker", j.worker], ["enqueued", fmtTime(j.enqueued_at)], ["run at", fmtTime(j.run_at)], ["started", fmtTime(j.started_at)], ["finished", fmtTime(j.finished_at)], ["timeout", j.timeout], ["labels", JSON.stringify(j.labels)], ["capabilities", j.capabilities.join(", ")], ["dead reason", j.dead_reason], ["cancel requested", j.cancel_requested ? "yes" : ""]]));
    renderFacts();
    const timeline = el("ol", { class: "timeline", id: "attempts" });
    const renderAttempts = () => {
      const items = (Array.isArray(j.errors) ? j.errors : []).map(a => el("li", { class: "bad" },
        el("div", {}, el("b", { text: `attempt ${a.attempt}` }), ` · ${a.kind || ""} · ${a.worker || ""} · ${fmtTime(sec(a.started_at))} → ${fmtTime(sec(a.ended_at))}`),
        el("div", { class: "error", text: `${a.type}: ${a.message}` }),
        a.traceback ? el("pre", { text: a.traceback.split("\n").slice(-12).join("\n") }) : null));
      if (j.state === "active") items.push(el("li", {}, el("b", { text: `attempt ${j.attempts}` }), ` · running on ${j.worker || "?"} since ${fmtTime(j.started_at)}`));
      if (j.state === "succeeded") items.push(el("li", { class: "good" }, el("b", { text: `attempt ${j.attempts}` }), ` · succeeded ${fmtTime(j.finished_at)}`));
      timeline.replaceChildren(...(items.length ? items : [el("li", { class: "muted", text: "no attempt yet" })]));
    };
    renderAttempts();
    const progressEl = el("div", { id: "progress" });
    const claude = el("div", { id: "claude" });
    const renderProgress = () => {
      progressEl.replaceChildren(jsonBlock(j.progress, `${jpath}/raw/progress${qp}`, j.truncated.includes("progress")));
      const p = j.progress || {}, r = (j.result && typeof j.result === "object") ? j.result : {};
      if (j.task === "claude_code" || p.session_id || p.model) {
        const usage = r.usage || {};
        claude.replaceChildren(el("h3", { text: "Claude Code run" }), kv([
          ["phase", p.phase], ["model", p.model], ["session id", p.session_id || r.session_id], ["CLI version", cliVersion],
          ["turns", r.num_turns !== undefined ? r.num_turns : p.turns], ["tool uses", p.tool_uses], ["last tool", p.last_tool],
          ["input tokens", usage.input_tokens !== undefined ? usage.input_tokens : p.input_tokens],
          ["output tokens", usage.output_tokens !== undefined ? usage.output_tokens : p.output_tokens],
          ["cost (USD)", r.total_cost_usd !== undefined ? r.total_cost_usd : p.cost_usd], ["API retries", p.api_retries],
          ["last error", p.last_error], ["failure", p.failure ? `${p.failure}: ${p.reason || ""}` : ""],
          ["workspace", p.workspace], ["workspace kept", j.dead_reason && j.dead_reason.includes("workspace kept") ? "yes (see reason)" : (j.state === "active" ? "" : "no")]]));
        claude.querySelectorAll("dd").forEach((dd, i) => { dd.dataset.k = ["phase", "model", "session", "cli", "turns", "tools", "lasttool", "in", "out", "cost"][i] || ""; });
      }
    };
    let cliVersion = "";
    const resultEl = el("div", { id: "result" });
    const renderResult = () => resultEl.replaceChildren(jsonBlock(j.result, `${jpath}/raw/result${qp}`, j.truncated.includes("result")));
    renderProgress(); renderResult();
    const feed = el("div", { class: "feed", id: "feed" });
    const graphEl = el("div", { id: "graph" });
    const ops = el("div", { class: "toolbar" },
      el("button", { id: "job-retry", text: "Retry", onclick: async () => { await act(`${jpath}/retry${qp}`); route(); } }),
      el("button", { id: "job-cancel", text: "Cancel", onclick: async () => { await act(`${jpath}/cancel${qp}`); } }),
      el("button", { id: "job-remove", text: "Remove", onclick: async () => { if (confirm("Remove job " + id + "?")) { await act(`${jpath}/remove${qp}`); location.hash = "#/queue/" + enc(queue); } } }),
      el("a", { href: `#/queue/${enc(queue)}/${STATES.includes(j.state) ? j.state : "ready"}`, text: "← " + queue }));
    view.replaceChildren(
      el("section", {}, el("h2", {}, "Job ", el("code", { id: "job-id", text: id }), " ", stateEl, " ", liveEl), ops, facts, claude),
      el("div", { class: "grid2" },
        el("section", {}, el("h2", { text: "Payload" }), jsonBlock(j.payload, `${jpath}/raw/payload${qp}`, j.truncated.includes("payload"))),
        el("section", {}, el("h2", { text: "Attempts" }), timeline)),
      el("section", {}, el("h2", { text: "Dependencies" }), graphEl),
      el("div", { class: "grid2" },
        el("section", {}, el("h2", { text: "Progress" }), progressEl),
        el("section", {}, el("h2", { text: "Result" }), resultEl)),
      el("section", {}, el("h2", {}, "Events ", el("span", { class: "muted", id: "event-count" })), feed));
    api(`${jpath}/graph${qp}`).then(g => {
      graphEl.replaceChildren(g.nodes.length > 1 ? drawGraph(g, id, queue) : el("p", { class: "muted", text: "no parents or pending children" }));
    }).catch(e => graphEl.replaceChildren(el("p", { class: "error", text: e.message })));
    let count = 0;
    const ctl = new AbortController();
    stream = ctl;
    liveEl.textContent = "● live";
    follow(`${jpath}/events${qp}`, (kind, data) => {
      if (kind === "snapshot" || kind === "state") {
        for (const k of ["state", "attempts", "max_attempts", "worker", "dead_reason"]) if (k in data) j[k] = data[k];
        for (const k of ["started_at", "finished_at"]) if (k in data) j[k] = data[k] ? Number(data[k]) / 1000 : null;
        if ("cancel" in data) j.cancel_requested = data.cancel === "1";
        if (kind === "snapshot") { j.progress = data.progress; j.errors = data.errors; }
        stateEl.textContent = j.state; stateEl.className = "st-" + j.state;
        renderFacts(); renderAttempts(); renderProgress();
      } else if (kind === "progress") {
        j.progress = data; renderProgress();
      } else if (kind === "attempt") {
        j.errors = data.errors; renderAttempts();
      } else if (kind === "log") {
        if (data && data.type === "system" && data.subtype === "init") cliVersion = data.claude_code_version || "";
        feed.appendChild(feedLine(data));
        count += 1;
        document.getElementById("event-count").textContent = `(${count})`;
        if (feed.scrollHeight - feed.scrollTop < feed.clientHeight + 80) feed.scrollTop = feed.scrollHeight;
      } else if (kind === "end") {
        liveEl.textContent = "";
        api(jpath + qp).then(fresh => { j = fresh; renderResult(); renderProgress(); renderAttempts(); renderFacts(); }).catch(() => {});
      } else if (kind === "gone") {
        liveEl.textContent = "(job removed or expired)";
      }
    }, ctl).finally(() => { if (stream === ctl) liveEl.textContent = ""; });
  }

  // ---- routing ----------------------------------------------------------------------------

  async function route() {
    stop();
    const [path, query] = location.hash.replace(/^#/, "").split("?");
    const params = new URLSearchParams(query || "");
    const parts = (path || "/").split("/").filter(Boolean).map(decodeURIComponent);
    if (parts[0] === "queue" && parts[1]) queueView(parts[1], parts[2], params);
    else if (parts[0] === "job" && parts[1] && parts[2]) jobView(parts[1], parts[2]);
    else if (parts[0] === "job" && parts[1]) {
      // No queue in the link: look the job up across queues once, then use the deep link.
      try { const j = await api(`/api/jobs/${enc(parts[1])}`); location.replace(`#/job/${enc(j.queue)}/${enc(j.id)}`); }
      catch (e) { view.replaceChildren(el("section", {}, el("p", { class: "error", id: "job-error", text: e.message }))); }
    } else queuesView(params);
  }

  document.getElementById("goto-job").addEventListener("submit", e => {
    e.preventDefault();
    const id = document.getElementById("goto-id").value.trim();
    if (id) location.hash = "#/job/" + enc(id);
  });
  window.addEventListener("hashchange", route);
  fetch("/api/config").then(r => r.json()).then(c => { config = c; document.getElementById("token-btn").hidden = !c.read_auth && !c.ops; }).catch(() => {});
  route();
})();
