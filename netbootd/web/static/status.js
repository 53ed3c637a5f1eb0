// netbootd status page: keeps the server-rendered page live by polling the
// JSON API (docs/CONTRACT-api.md) every 2 s, shows a host's boot timeline,
// and, with an admin token, offers the admin actions.  Hosts come one page
// at a time (limit + cursor, filtered on the server): after a MAC flood the
// whole list was megabytes every 2 s.
//
// Every value from the API may be host-controlled (hostname, vendor class,
// uuid, event details): the DOM is built with createElement/textContent and
// attributes from a short allow-list, never innerHTML (DESIGN rule 9).  The
// page's Content-Security-Policy forbids inline script and style as well.
"use strict";

(function () {
  const POLL_MS = 2000;
  const PAGE = 50;                 // hosts per page (net/http/status.py PAGE)
  const STATES = new Set(["discovered", "registered", "pending", "idle", "assigned", "booting",
    "active", "error", "retired"]);
  const TOKEN_KEY = "netbootd.token";
  // A new boot starts at a DHCP offer once the previous one reached HTTP or
  // the agent, or after this much silence (seconds).
  const BOOT_GAP = 600;
  // Same rule as netbootd/web/__init__.py is_failure(); the failure kinds come
  // from the event catalog (netbootd/events.py, GET /api/v1/events/kinds),
  // fetched once at start, not copied here.
  const FAILED_KINDS = new Set();
  const SUMMARY_FIRST = ["file", "path", "status", "profile", "ip", "error", "reason", "old", "new"];
  // Assignable profiles and their argument fields (policy/boot.py validate_args).
  const PROFILES = {
    localboot: [],
    discover: [],
    shell: [],
    linux: [["kernel", "kernel URL or file (required)"], ["initrds", "initrd(s), space-separated"],
      ["cmdline", "kernel command line"]],
    sanboot: [["san_uri", "iscsi:10.0.0.1::::iqn.2026-01.lan.netboot:vol1"],
      ["initiator_iqn", "initiator IQN (optional)"]],
  };
  const SAFE_ATTRS = new Set(["type", "title", "value", "min", "max", "low", "high", "optimum",
    "colspan", "tabindex", "placeholder", "name", "for", "id", "aria-label", "role"]);

  const state = {
    status: null, hosts: [], byMac: new Map(), selected: null, detail: null,
    timer: null, inflight: false, formFor: null, confirmDelete: null,
    // paging: cursors of the pages before this one, this page's, the next's
    back: [], cursor: null, next: null, total: 0, counts: null, filter: "",
    // ?account=NAME ("-": hosts in no account), as /api/v1/hosts?account= takes it
    account: new URLSearchParams(location.search).get("account") || "", accounts: null,
  };
  const $ = (id) => document.getElementById(id);

  // -- DOM helpers (text only) ------------------------------------------------
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "hidden") e.hidden = true;
      else if (k.startsWith("data-") || SAFE_ATTRS.has(k)) e.setAttribute(k, String(v));
      else throw new Error("attribute not allowed: " + k);
    }
    append(e, children);
    return e;
  }
  function append(e, c) {
    if (c === null || c === undefined || c === false) return;
    if (Array.isArray(c)) { c.forEach((x) => append(e, x)); return; }
    e.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  function replaceChildren(e, ...children) {
    while (e.firstChild) e.removeChild(e.firstChild);
    append(e, children);
  }
  // A class name from a server value (state names are an enum, but still).
  const token_ = (s) => String(s === null || s === undefined ? "" : s).replace(/[^A-Za-z0-9_-]/g, "");

  // -- formatting -----------------------------------------------------------------
  function isFailure(ev) {
    if (!ev) return false;
    if (FAILED_KINDS.has(ev.kind)) return true;
    const st = ev.detail && ev.detail.status;
    return typeof ev.kind === "string" && ev.kind.startsWith("http.") &&
      typeof st === "number" && st >= 400;
  }
  function summary(detail) {
    if (detail === null || detail === undefined) return "";
    if (typeof detail !== "object") return String(detail);
    const keys = SUMMARY_FIRST.filter((k) => k in detail)
      .concat(Object.keys(detail).filter((k) => !SUMMARY_FIRST.includes(k)).sort());
    const parts = [];
    for (const k of keys) {
      let v = detail[k];
      if (v === null || v === undefined || v === "" || k === "bytes") continue;
      if (typeof v !== "string") v = JSON.stringify(v);
      parts.push(k + "=" + v);
    }
    return parts.join(" ");
  }
  function humanBytes(n) {
    if (typeof n !== "number") return "";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i === 0 ? n.toFixed(0) + " B" : n.toFixed(1) + " " + units[i];
  }
  // A host's hardware in one line (netbootd/web/__init__.py hw_glance says the same).
  function hwGlance(hw) {
    if (!hw || typeof hw !== "object") return "";
    const n = (k) => (typeof hw[k] === "number" ? hw[k] : null);
    const parts = [];
    if (n("cores") || n("threads")) parts.push((n("cores") || "?") + "c/" + (n("threads") || "?") + "t");
    if (n("memory_bytes")) parts.push(humanBytes(n("memory_bytes")));
    if (n("disks")) parts.push(n("disks") + (n("disks") === 1 ? " disk " : " disks ") + humanBytes(n("disk_bytes") || 0));
    if (n("nics")) parts.push(n("nics") + (n("nics") === 1 ? " nic" : " nics"));
    if (typeof hw.firmware === "string") parts.push(hw.firmware);
    return parts.join(" ");
  }
  function ago(ts) {
    const now = state.status ? state.status.now : Date.now() / 1000;
    if (typeof ts !== "number") return "-";
    const d = Math.max(0, now - ts);
    if (d < 60) return d.toFixed(0) + "s ago";
    if (d < 3600) return Math.floor(d / 60) + "m ago";
    if (d < 86400) return Math.floor(d / 3600) + "h ago";
    return Math.floor(d / 86400) + "d ago";
  }
  function clock(ts) {
    if (typeof ts !== "number") return "-";
    const d = new Date(ts * 1000);
    return [d.getHours(), d.getMinutes(), d.getSeconds()].map((x) => String(x).padStart(2, "0")).join(":");
  }
  function rel(dt) {
    if (dt < 60) return "+" + dt.toFixed(dt < 10 ? 3 : 1) + "s";
    const m = Math.floor(dt / 60), s = Math.floor(dt % 60);
    return "+" + m + "m" + String(s).padStart(2, "0") + "s";
  }
  function duration(sec) {
    if (typeof sec !== "number" || sec < 0) return "";
    const d = Math.floor(sec / 86400), h = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60);
    return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m + "m";
  }
  function phase(kind) {
    const p = String(kind).split(".")[0];
    return { dhcp: "DHCP", proxy: "DHCP", pool: "DHCP", boot: "DHCP", tftp: "TFTP", http: "HTTP",
      agent: "agent", host: "host" }[p] || p;
  }

  // -- API ----------------------------------------------------------------------
  function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && token()) headers.Authorization = "Bearer " + token();
    const init = { method, headers, cache: "no-store", credentials: "same-origin" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) {
      const why = data && typeof data.error === "string" ? data.error : "HTTP " + r.status;
      const err = new Error(why);
      err.status = r.status;
      throw err;
    }
    return data;
  }
  const hostPath = (mac) => "/api/v1/hosts/" + encodeURIComponent(mac);

  // -- messages -------------------------------------------------------------------
  let noticeTimer = null;
  function showError(text) {
    const e = $("error");
    e.className = "error";
    e.textContent = text;
    e.hidden = false;
  }
  function showNotice(text) {
    const e = $("error");
    e.className = "notice";
    e.textContent = text;
    e.hidden = false;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { if (e.className === "notice") e.hidden = true; }, 4000);
  }
  function setLive(ok, why) {
    const e = $("live");
    e.className = ok ? "live ok" : "live down";
    e.textContent = ok ? "live · " + clock(state.status.now) : "offline: " + why;
  }

  // -- header -------------------------------------------------------------------
  function renderHeader() {
    const s = state.status;
    $("version").textContent = "v" + s.version;
    $("mode").textContent = s.mode + " mode";
    $("uptime").textContent = typeof s.started === "number" && s.started > 0
      ? "up " + duration(s.now - s.started) : "";
    const chips = Object.keys(s.hosts || {}).sort().map((k) =>
      el("span", { class: "chip state-" + token_(k) }, k + " " + s.hosts[k]));
    if (state.counts && state.counts.seen) {
      chips.push(el("span", { class: "chip seen", title: "MACs seen on DHCP only, not stored" },
        "seen " + state.counts.seen));
    }
    replaceChildren($("counts"), chips);
  }

  // -- hosts ----------------------------------------------------------------------
  function isAdmin() { return token() !== ""; }
  function actionButtons(h) {
    const b = (action, label, extra) => el("button", Object.assign(
      { type: "button", class: "act act-" + action, "data-action": action, "data-mac": h.mac }, extra || {}), label);
    const out = [b("assign", "assign…")];
    if (h.state === "discovered" || h.state === "error" || h.state === "pending") out.push(b("approve", "approve"));
    if (h.state !== "retired") out.push(b("retire", "retire"));
    out.push(state.confirmDelete === h.mac ? b("delete", "confirm delete", { class: "act act-delete armed" })
      : b("delete", "delete"));
    return out;
  }
  function hostRow(h) {
    const ev = h.last_event;
    return el("tr", { class: "host" + (h.mac === state.selected ? " selected" : ""), "data-mac": h.mac, tabindex: 0 },
      el("td", { class: "mac" }, h.mac),
      el("td", { class: "hostname" }, h.hostname || "-"),
      el("td", { class: "state" }, el("span", { class: "chip state-" + token_(h.state) }, h.state)),
      el("td", { class: "account" }, h.account || "-"),
      el("td", { class: "arch" }, h.arch_name || "-"),
      el("td", { class: "ip" }, h.ip || "-"),
      el("td", { class: "last" + (isFailure(ev) ? " failed" : "") },
        ev ? [ev.kind, " ", el("span", { class: "age" }, ago(ev.ts))] : "-"),
      el("td", { class: "hw" }, hwGlance(h.hw) || "-"),
      el("td", { class: "actions admin-only" }, isAdmin() ? actionButtons(h) : null));
  }
  function renderHosts() {
    if (!state.status) return;                   // keep the server's rows until the first poll
    const tbody = $("hosts").tBodies[0];
    const old = new Map();
    for (const tr of Array.from(tbody.rows)) {
      if (tr.dataset.sig !== undefined) old.set(tr.dataset.mac, tr);
      else tbody.removeChild(tr);            // server-rendered rows and the "empty" row
    }
    const admin = isAdmin();
    state.hosts.forEach((h, i) => {
      // Rows are rebuilt only when what they show changed, so a button under
      // the pointer is not swapped out between mousedown and click.
      const sig = JSON.stringify([h, admin, h.mac === state.selected, state.confirmDelete === h.mac]);
      let tr = old.get(h.mac);
      if (!tr || tr.dataset.sig !== sig) {
        const fresh = hostRow(h);
        fresh.dataset.sig = sig;
        if (tr) tbody.replaceChild(fresh, tr);
        tr = fresh;
      } else if (h.last_event) {
        tr.querySelector(".age").textContent = ago(h.last_event.ts);
      }
      old.delete(h.mac);
      if (tbody.rows[i] !== tr) tbody.insertBefore(tr, tbody.rows[i] || null);
    });
    old.forEach((tr) => tbody.removeChild(tr));
    if (!state.hosts.length) {
      tbody.appendChild(el("tr", { class: "empty" }, el("td", { colspan: 9 },
        state.filter || state.account ? "no host matches" : "no hosts yet")));
    }
    $("host-total").textContent = String(state.total);
    const first = state.back.length * PAGE;
    $("host-range").textContent = (state.hosts.length ? first + 1 : 0) + "\u2013" +
      (first + state.hosts.length) + " of " + state.total;
    $("host-prev").disabled = state.back.length === 0;
    $("host-next").disabled = !state.next;
  }
  function hostsPath() {
    // A state name filters on the state, anything else on mac/hostname/ip.
    const f = state.filter;
    const q = f === "" ? "" : STATES.has(f) ? "&state=" + encodeURIComponent(f) : "&q=" + encodeURIComponent(f);
    const a = state.account ? "&account=" + encodeURIComponent(state.account) : "";
    return "/api/v1/hosts?limit=" + PAGE + q + a + (state.cursor ? "&cursor=" + encodeURIComponent(state.cursor) : "");
  }
  function goPage(dir) {
    if (dir > 0 && state.next) { state.back.push(state.cursor); state.cursor = state.next; }
    else if (dir < 0 && state.back.length) state.cursor = state.back.pop();
    else if (dir === 0) { state.back = []; state.cursor = null; }
    else return;
    refresh(true);
  }
  let filterTimer = null;
  function applyFilter() {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      const f = $("host-filter").value.trim().toLowerCase();
      if (f !== state.filter) { state.filter = f; goPage(0); }
    }, 250);
  }

  // The account filter: its options from /api/v1/accounts (names are data:
  // option text and value only); the choice is kept in the URL (?account=).
  function renderAccounts() {
    const sel = $("account-filter");
    const names = (state.accounts || []).map((a) => a.name).sort();
    if (state.account && state.account !== "-" && !names.includes(state.account)) names.push(state.account);
    const want = JSON.stringify([names, state.account]);
    if (sel.dataset.sig === want) return;
    sel.dataset.sig = want;
    replaceChildren(sel, el("option", { value: "" }, "all accounts"), el("option", { value: "-" }, "no account"),
      names.map((n) => el("option", { value: n }, n)));
    sel.value = state.account;
  }
  function setAccount(a) {
    if (a === state.account) return false;
    state.account = a;
    state.back = [];
    state.cursor = null;
    const q = new URLSearchParams(location.search);
    if (a) q.set("account", a); else q.delete("account");
    const search = q.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : "") + location.hash);
    return true;
  }
  function applyAccount() {
    if (setAccount($("account-filter").value)) refresh(true);
  }

  // -- pools, transfers, events -------------------------------------------------
  function renderPools() {
    const rows = (state.status.pools || []).map((p) => {
      const size = p.size || 1;
      return el("tr", { class: "pool", "data-name": p.name },
        el("td", null, p.name), el("td", null, p.type || "RANGED"), el("td", null, p.subnet),
        // where it is served: the interfaces attached to it, the relays whose giaddr selects it
        el("td", null, [...(p.attached || []), ...(p.relays || [])].join(", ") || p.interface || "-"),
        el("td", { class: "num" }, p.used + "/" + p.size + " ",
          el("span", { class: "pct" }, p.size ? Math.round(100 * p.used / p.size) + "%" : "-")),
        el("td", { class: "bar-col" }, el("meter", { class: "pool-bar", min: 0, max: size, value: p.used || 0,
          low: size * 0.7, high: size * 0.9, optimum: 0 }, p.used + "/" + p.size)));
    });
    replaceChildren($("pools").tBodies[0],
      rows.length ? rows : el("tr", { class: "empty" }, el("td", { colspan: 6 }, "no networks served")));
  }
  // -- volumes (issue 13): pools, volumes, exports; hidden when storage is off ----------
  // Without [storage] the volume routes answer 503: not asked (the page says which).
  function storageOn() { return $("volumes-section").dataset.storage === "on"; }
  function renderVolumes() {
    const v = state.volumes, x = state.exports;
    $("volumes-section").hidden = !v;
    if (!v) return;
    const pools = (v.pools || []).map((p) => {
      const total = p.total || 1;
      return el("tr", { class: "vpool", "data-name": p.name },
        el("td", null, p.name), el("td", null, p.error || p.backend || "-"),
        el("td", { class: "num" }, humanBytes(p.used) + "/" + humanBytes(p.total) + " ",
          el("span", { class: "pct" }, p.total ? Math.round(100 * p.used / p.total) + "%" : "-")),
        el("td", { class: "bar-col" }, el("meter", { class: "pool-bar", min: 0, max: total,
          value: p.used || 0, low: total * 0.7, high: total * 0.9, optimum: 0 },
          p.used + "/" + p.total)),
        el("td", { class: "num" }, humanBytes(p.provisioned)));
    });
    replaceChildren($("volume-pools").tBodies[0], ...pools);
    const vols = (v.volumes || []).map((o) => el("tr", { class: "volume", "data-name": o.name },
      el("td", null, o.name), el("td", null, o.pool), el("td", null, o.kind),
      el("td", { class: "num" }, humanBytes(o.size)), el("td", { class: "num" }, humanBytes(o.used)),
      el("td", null, o.origin || "-"), el("td", null, o.exported_to || "-",
        o.job ? el("span", { class: "vjob" }, " ", el("progress", { max: o.job.total || 0,
          value: o.job.done || 0 }), " " + o.job.op + " " + (o.job.total ?
          Math.floor(100 * o.job.done / o.job.total) : 0) + "%") : "")));
    replaceChildren($("volumes").tBodies[0],
      vols.length ? vols : el("tr", { class: "empty" }, el("td", { colspan: 7 }, "no volumes")));
    const problem = x && !x.available ? x.problem : "";
    $("exports-problem").hidden = !problem;
    $("exports-problem").textContent = problem || "";
    const exps = ((x && x.exports) || []).map((e) => el("tr", { class: "export", "data-volume": e.volume },
      el("td", null, e.volume), el("td", null, e.host), el("td", null, e.target_iqn),
      el("td", null, e.chap ? "yes" : "no")));
    replaceChildren($("exports").tBodies[0],
      exps.length ? exps : el("tr", { class: "empty" }, el("td", { colspan: 4 }, "no exports")));
  }
  function renderTransfers() {
    const rows = (state.status.transfers || []).map((t) =>
      el("tr", { class: "transfer" },
        el("td", null, t.proto), el("td", null, t.client), el("td", { class: "file" }, t.file),
        el("td", null, el("progress", { max: t.size || 0, value: t.bytes || 0 }), " ",
          el("span", { class: "num" }, humanBytes(t.bytes || 0) + " / " + (t.size ? humanBytes(t.size) : "?"))),
        el("td", null, ago(t.started))));
    replaceChildren($("transfers").tBodies[0],
      rows.length ? rows : el("tr", { class: "empty" }, el("td", { colspan: 5 }, "no transfer under way")));
  }
  function renderEvents() {
    const evs = (state.status.events || []).slice().reverse();
    const rows = evs.map((ev) =>
      el("tr", { class: "event" + (isFailure(ev) ? " failed" : ""), "data-id": ev.id },
        el("td", { class: "time" }, clock(ev.ts)),
        el("td", { class: "mac" }, ev.mac
          ? el("button", { type: "button", class: "link", "data-select": ev.mac }, ev.mac) : "-"),
        el("td", { class: "kind" }, ev.kind),
        el("td", { class: "num" }, ev.detail ? humanBytes(ev.detail.bytes) : ""),
        el("td", { class: "detail" }, summary(ev.detail))));
    replaceChildren($("events").tBodies[0],
      rows.length ? rows : el("tr", { class: "empty" }, el("td", { colspan: 5 }, "no events yet")));
  }

  // -- host detail and timeline -----------------------------------------------------
  function splitBoots(timeline) {
    const boots = [];
    let cur = null, prev = null;
    for (const ev of timeline) {
      const start = ev.kind === "dhcp.offer" || ev.kind === "proxy.offer";
      const gap = prev ? ev.ts - prev.ts : 0;
      if (!cur || gap > BOOT_GAP || (start && cur.reached)) {
        cur = { steps: [], reached: false };
        boots.push(cur);
      }
      cur.steps.push(ev);
      if (ev.kind === "http.script" || ev.kind === "agent.register") cur.reached = true;
      prev = ev;
    }
    return boots;
  }
  function verdict(steps) {
    const failed = steps.filter(isFailure);
    const last = steps[steps.length - 1];
    if (failed.length) {
      const f = failed[failed.length - 1];
      const d = f.detail || {};
      const why = d.error || d.reason || (d.status ? "HTTP " + d.status : "") || "";
      return { cls: "verdict failed", text: "failed at " + f.kind + (why ? ": " + why : "") +
        (d.file || d.path ? " (" + (d.file || d.path) + ")" : "") };
    }
    if (steps.some((s) => s.kind === "agent.register")) return { cls: "verdict ok", text: "booted: the agent called back" };
    return { cls: "verdict", text: "last step: " + last.kind + " " + ago(last.ts) };
  }
  function renderTimeline(timeline) {
    const box = $("timeline");
    if (!timeline) { replaceChildren(box, el("p", { class: "empty" }, "loading…")); $("verdict").textContent = ""; return; }
    if (!timeline.length) { replaceChildren(box, el("p", { class: "empty" }, "no boot steps recorded")); $("verdict").textContent = ""; return; }
    const boots = splitBoots(timeline).reverse();        // newest boot first
    const v = verdict(boots[0].steps);
    $("verdict").className = v.cls;
    $("verdict").textContent = v.text;
    const openBefore = new Set(Array.from(box.querySelectorAll("details[open]")).map((d) => d.dataset.start));
    replaceChildren(box, boots.map((b, i) => {
      const t0 = b.steps[0].ts;
      const bad = b.steps.some(isFailure);
      const det = el("details", { class: "boot" + (bad ? " failed" : ""), "data-start": String(t0) },
        el("summary", null, "boot at " + clock(t0) + " · " + b.steps.length + " steps" + (bad ? " · failed" : "")),
        el("ol", { class: "steps" }, b.steps.map((ev) =>
          el("li", { class: "step phase-" + token_(phase(ev.kind)) + (isFailure(ev) ? " failed" : ""), "data-kind": ev.kind },
            el("span", { class: "t" }, rel(ev.ts - t0)),
            el("span", { class: "phase" }, phase(ev.kind)),
            el("span", { class: "kind" }, ev.kind),
            el("span", { class: "num" }, ev.detail ? humanBytes(ev.detail.bytes) : ""),
            el("span", { class: "detail" }, summary(ev.detail))))));
      if (i === 0 || openBefore.has(String(t0))) det.open = true;
      return det;
    }));
  }
  function fact(label, value) {
    return [el("dt", null, label), el("dd", null, value === null || value === undefined || value === "" ? "-" : value)];
  }
  function renderDetail() {
    const h = state.detail;
    if (!h) return;
    $("detail").hidden = false;
    $("detail-mac").textContent = h.mac;
    const args = h.profile_args && Object.keys(h.profile_args).length ? JSON.stringify(h.profile_args) : "";
    const ids = (Array.isArray(h.ids) ? h.ids : []).filter((i) => Array.isArray(i) && !(i[0] === "mac" && i[1] === h.mac))
      .map((i) => i[0] + "=" + i[1]);
    const act = h.action && typeof h.action === "object"
      ? h.action.action + (Array.isArray(h.action.disks) ? " disks=" + h.action.disks.join(",") : "") + " (id " + h.action.id + ")" : "none";
    replaceChildren($("detail-facts"),
      fact("hostname", h.hostname), fact("state", h.state), fact("account", h.account || "none"),
      fact("agent credential", h.credential ? "yes" : "no"),
      fact("identifiers", ["mac=" + h.mac].concat(ids).join(", ")), fact("pending action", act),
      fact("hardware", hwGlance(h.hw) || "no inventory yet"),
      fact("arch", h.arch_name ? h.arch_name + " (" + h.arch + ")" : null), fact("vendor class", h.vendor_class),
      fact("uuid", h.uuid), fact("interface", h.interface), fact("ip", h.ip),
      fact("profile", h.profile ? h.profile + (args ? " " + args : "") : "default"),
      fact("first seen", clock(h.first_seen)), fact("last seen", ago(h.last_seen)));
    renderDetailActions();
    renderInventory(h.inventory);
    renderTimeline(h.timeline);
  }
  // The latest inventory document ({ts, doc}); every string in it is the host's.
  function renderInventory(inv) {
    const box = $("inventory");
    if (inv === undefined) return;               // not fetched yet: keep what is shown
    if (!inv || !inv.doc) { replaceChildren(box, el("h3", null, "Hardware"), el("p", { class: "empty" }, "no inventory yet")); return; }
    const d = inv.doc, cpu = d.cpu || {}, dmi = d.dmi || {};
    const sys = dmi.system || {}, board = dmi.board || {}, bios = dmi.bios || {};
    const join = (...p) => p.filter((x) => x !== null && x !== undefined && x !== "").join(" ");
    const counts = ["sockets", "cores", "threads"].filter((k) => typeof cpu[k] === "number").map((k) => cpu[k] + " " + k).join(", ");
    const yes = (v) => (v === true ? "yes" : v === false ? "no" : "-");
    const table = (cls, head, rows) => (rows.length ? el("table", { class: "inv " + cls },
      el("thead", null, el("tr", null, head.map((x) => el("th", null, x)))),
      el("tbody", null, rows.map((r) => el("tr", null, r.map((x) => el("td", null, x === null || x === undefined || x === "" ? "-" : x)))))) : null);
    const disks = (Array.isArray(d.disks) ? d.disks : []).map((x) =>
      [x.name, humanBytes(x.bytes), x.model, x.serial, yes(x.rotational), x.transport]);
    const nics = (Array.isArray(d.nics) ? d.nics : []).map((x) =>
      [x.name, x.mac, x.driver, yes(x.link), typeof x.speed === "number" ? x.speed + " Mb/s" : "-"]);
    replaceChildren(box, el("h3", null, "Hardware ", el("small", null, "inventory of " + clock(inv.ts))),
      el("dl", { class: "facts", id: "inventory-facts" },
        fact("cpu", join(cpu.model, counts ? "(" + counts + ")" : "")),
        fact("memory", d.memory ? humanBytes(d.memory.bytes) : ""),
        fact("system", join(sys.vendor, sys.product, sys.serial ? "serial " + sys.serial : "")),
        fact("board", join(board.vendor, board.product, board.serial ? "serial " + board.serial : "")),
        fact("bios", join(bios.vendor, bios.version, bios.date ? "(" + bios.date + ")" : "")),
        fact("firmware", d.firmware),
        fact("secure boot", d.secure_boot === true ? "on" : d.secure_boot === false ? "off" : "unknown")),
      table("disks", ["disk", "size", "model", "serial", "rotational", "transport"], disks),
      table("nics", ["nic", "mac", "driver", "link", "speed"], nics));
  }
  function renderDetailActions() {
    const box = $("detail-actions");
    const key = isAdmin() ? state.detail.mac : null;
    if (state.formFor === key) return;            // keep what is being typed
    state.formFor = key;
    if (!key) { replaceChildren(box); return; }
    const sel = el("select", { id: "assign-profile", name: "profile", "aria-label": "profile" },
      Object.keys(PROFILES).map((p) => el("option", { value: p }, p)));
    const fields = el("div", { id: "assign-fields", class: "fields" });
    const showFields = () => {
      replaceChildren(fields, PROFILES[sel.value].map(([name, hint]) =>
        el("label", null, name + " ", el("input", { type: "text", name, "data-arg": name, placeholder: hint }))));
    };
    sel.addEventListener("change", showFields);
    showFields();
    const form = el("form", { id: "assign-form", class: "assign" },
      el("label", null, "profile ", sel), fields,
      el("button", { type: "submit", class: "act act-assign-submit" }, "assign"));
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const args = {};
      for (const input of fields.querySelectorAll("input[data-arg]")) {
        const v = input.value.trim();
        if (!v) continue;
        args[input.dataset.arg] = input.dataset.arg === "initrds" ? v.split(/\s+/) : v;
      }
      act("assign", state.detail.mac, { profile: sel.value, args });
    });
    // For the host's agent (it picks an action up at its next poll); a wipe
    // names disks and is confirmed with the MAC: `netbootd hosts wipe` only.
    const agentAct = (label, action, body) => {
      const b = el("button", { type: "button", class: "act act-agent", "data-agent": label }, label);
      b.addEventListener("click", () => act(action, key, body));
      return b;
    };
    const agent = el("div", { id: "agent-actions", class: "agent-actions" }, "agent: ",
      agentAct("poweroff", "actions", { action: "poweroff" }), agentAct("reboot", "actions", { action: "reboot" }),
      agentAct("wait", "actions", { action: "wait" }), agentAct("forget credential", "reset"));
    replaceChildren(box, form, agent);
  }
  async function loadDetail() {
    const mac = state.selected;
    if (!mac) return;
    try {
      const h = await api("GET", hostPath(mac));
      if (state.selected !== mac) return;
      state.detail = Object.assign({ timeline: [] }, h);
      renderDetail();
    } catch (e) {
      if (e.status === 404) { closeDetail(); showNotice("host " + mac + " is gone"); } else throw e;
    }
  }
  function select(mac) {
    if (state.selected !== mac) { state.formFor = undefined; replaceChildren($("timeline")); replaceChildren($("inventory")); }
    state.selected = mac;
    history.replaceState(null, "", location.pathname + location.search + "#host=" + encodeURIComponent(mac));
    const h = state.byMac.get(mac);
    if (h) {
      const keep = state.detail && state.detail.mac === mac ? state.detail.timeline : null;
      state.detail = Object.assign({}, h, { timeline: keep });
      renderDetail();
    }
    renderHosts();
    loadDetail().catch((e) => showError("host " + mac + ": " + e.message));
  }
  function closeDetail() {
    state.selected = null;
    state.detail = null;
    state.formFor = undefined;
    $("detail").hidden = true;
    history.replaceState(null, "", location.pathname + location.search);
    renderHosts();
  }

  // -- actions ------------------------------------------------------------------------
  async function act(action, mac, body) {
    if (action === "delete" && state.confirmDelete !== mac) {
      state.confirmDelete = mac;                 // a second click confirms
      renderHosts();
      setTimeout(() => { if (state.confirmDelete === mac) { state.confirmDelete = null; renderHosts(); } }, 5000);
      return;
    }
    state.confirmDelete = null;
    try {
      let h;
      if (action === "delete") await api("DELETE", hostPath(mac));
      else h = await api("POST", hostPath(mac) + "/" + action, body === undefined ? {} : body);
      if (h && h.mac) {
        const i = state.hosts.findIndex((x) => x.mac === h.mac);
        if (i >= 0) { state.hosts[i] = Object.assign({}, state.hosts[i], h, { last_event: state.hosts[i].last_event }); index(); renderHosts(); }
      }
      showNotice(action === "actions" ? body.action + " " + mac + ": queued for its agent"
        : action + " " + mac + ": done");
      if (action === "delete" && state.selected === mac) closeDetail();
    } catch (e) {
      showError((action === "actions" ? body.action : action) + " " + mac + ": " + e.message);
    }
    refresh();
  }

  // -- polling ---------------------------------------------------------------------------
  function index() { state.byMac = new Map(state.hosts.map((h) => [h.mac, h])); }
  async function poll() {
    if (document.hidden) {                       // a background tab costs the daemon nothing
      clearTimeout(state.timer);
      state.timer = setTimeout(poll, POLL_MS);
      return;
    }
    state.inflight = true;
    const seq = state.seq = (state.seq || 0) + 1;  // a page turn overtakes a poll in flight
    try {
      const [s, hs, accs, vols, exps] = await Promise.all([api("GET", "/api/v1/status"),
        hostsPage(), api("GET", "/api/v1/accounts").catch(() => state.accounts),
        storageOn() ? api("GET", "/api/v1/volumes").catch(() => null) : null,
        storageOn() ? api("GET", "/api/v1/exports").catch(() => null) : null]);
      if (seq !== state.seq) return;
      state.status = s;
      state.accounts = Array.isArray(accs) ? accs : [];
      state.volumes = vols;
      state.exports = exps;
      state.hosts = Array.isArray(hs.hosts) ? hs.hosts : [];
      state.next = hs.next || null;
      state.total = typeof hs.total === "number" ? hs.total : state.hosts.length;
      state.counts = hs.counts || null;
      if (!state.hosts.length && state.back.length) {   // the page emptied: go back one
        state.cursor = state.back.pop();
        state.next = null;
      }
      index();
      renderHeader(); renderAccounts(); renderHosts(); renderPools(); renderVolumes(); renderTransfers(); renderEvents();
      if (state.selected) await loadDetail();
      setLive(true);
    } catch (e) {
      setLive(false, e.message);
    } finally {
      if (seq === state.seq) {
        state.inflight = false;
        clearTimeout(state.timer);
        state.timer = setTimeout(poll, state.hosts.length || !state.back.length ? POLL_MS : 0);
      }
    }
  }
  // A page of hosts; a filter on an account that is gone shows every host again.
  async function hostsPage() {
    try {
      return await api("GET", hostsPath());
    } catch (e) {
      if (e.status !== 404 || !state.account) throw e;
      showError("account " + state.account + ": " + e.message);
      setAccount("");
      return api("GET", hostsPath());
    }
  }
  function refresh(force) {
    if (state.inflight && !force) return;        // the running poll reschedules itself
    clearTimeout(state.timer);
    poll();
  }

  // -- token ---------------------------------------------------------------------------
  function applyAdmin() {
    const admin = isAdmin();
    document.body.classList.toggle("admin", admin);
    $("token-forget").hidden = !admin;
    $("token").hidden = admin;
    $("token-use").hidden = admin;
    state.formFor = undefined;
    if (state.status) renderHosts();
    if (state.detail) renderDetailActions();
  }

  async function loadKinds() {
    try {
      const kinds = await api("GET", "/api/v1/events/kinds");
      for (const k of kinds || []) if (k && k.failure) FAILED_KINDS.add(k.kind);
    } catch (e) { /* the page still works; failures show once the catalog loads */ }
  }

  function init() {
    loadKinds();
    $("token-form").addEventListener("submit", (e) => {
      e.preventDefault();
      const t = $("token").value.trim();
      $("token").value = "";
      if (t) sessionStorage.setItem(TOKEN_KEY, t);
      applyAdmin();
    });
    $("token-forget").addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      applyAdmin();
    });
    $("host-filter").addEventListener("input", applyFilter);
    $("account-filter").addEventListener("change", applyAccount);
    $("host-prev").addEventListener("click", () => goPage(-1));
    $("host-next").addEventListener("click", () => goPage(1));
    $("detail-close").addEventListener("click", closeDetail);
    $("error").addEventListener("click", () => { $("error").hidden = true; });
    $("hosts").addEventListener("click", (e) => {
      const btn = e.target.closest("button[data-action]");
      if (btn) {
        const mac = btn.dataset.mac;
        if (btn.dataset.action === "assign") select(mac);
        else act(btn.dataset.action, mac);
        return;
      }
      const tr = e.target.closest("tr.host");
      if (tr) select(tr.dataset.mac);
    });
    $("hosts").addEventListener("keydown", (e) => {
      const tr = e.target.closest("tr.host");
      if (tr && (e.key === "Enter" || e.key === " ") && e.target === tr) { e.preventDefault(); select(tr.dataset.mac); }
    });
    $("events").addEventListener("click", (e) => {
      const b = e.target.closest("button[data-select]");
      if (b) select(b.dataset.select);
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    applyAdmin();
    const m = /^#host=(.+)$/.exec(location.hash);
    if (m) select(decodeURIComponent(m[1]));
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
