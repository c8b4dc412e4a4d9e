// The Bellows console: a client of the REST API with the operator's token.
// Text only (never innerHTML from data); live updates from
// GET /api/v1/changes (server-sent events, read with fetch so the token
// goes in a header); no polling loop.
"use strict";

const TOKEN_KEY = "bellows.token";
const main = document.getElementById("main");
let token = sessionStorage.getItem(TOKEN_KEY);
// What the open view wants to hear about: (change) => void.
let onChange = null;
let changesAbort = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function clear(node) {
  while (node.firstChild) node.firstChild.remove();
}

async function api(path, options = {}) {
  const headers = Object.assign({ Authorization: "Bearer " + token }, options.headers || {});
  if (options.body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    signOut("The token was refused: sign in again.");
    throw new Error("unauthorized");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = text; }
  if (!response.ok) {
    const message = body && body.message ? body.message : response.status + " " + text;
    const error = new Error(message);
    error.field = body && body.field;
    throw error;
  }
  return body;
}

function when(ms) {
  return ms ? new Date(ms).toISOString().replace("T", " ").replace("Z", "") : "";
}

function stateCell(state) {
  return el("td", { class: "state-" + state, "data-state": state }, state);
}

// --- sign in -------------------------------------------------------------

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  token = null;
  if (changesAbort) changesAbort.abort();
  document.getElementById("nav").hidden = true;
  document.getElementById("live").hidden = true;
  clear(main);
  document.getElementById("login").hidden = false;
  document.getElementById("token").value = "";
  document.getElementById("login-error").textContent = message || "";
}

document.getElementById("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  token = document.getElementById("token").value.trim();
  try {
    await api("/api/v1/boot");
  } catch (error) {
    signOut(error.message === "unauthorized" ? "That token was refused." : error.message);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  document.getElementById("token").value = "";
  start();
});

document.getElementById("logout").addEventListener("click", () => signOut(""));

// --- live changes --------------------------------------------------------

async function followChanges() {
  let backoff = 1000;
  for (;;) {
    changesAbort = new AbortController();
    try {
      const response = await fetch("/api/v1/changes", {
        headers: { Authorization: "Bearer " + token },
        signal: changesAbort.signal,
      });
      if (response.status === 401) {
        signOut("The token was refused: sign in again.");
        return;
      }
      if (!response.ok || !response.body) throw new Error("changes: " + response.status);
      document.getElementById("live").hidden = false;
      backoff = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (name === "change" && onChange) onChange(JSON.parse(data));
          if (name === "resync") route();
        }
      }
    } catch (error) {
      if (!token) return;
    }
    document.getElementById("live").hidden = true;
    if (!token) return;
    // The stream ended (server restart): reconnect, more slowly each time.
    await new Promise((resolve) => setTimeout(resolve, backoff));
    backoff = Math.min(backoff * 2, 30000);
  }
}

// --- views ---------------------------------------------------------------

function interfaces(hw) {
  return ((hw.network && hw.network.interfaces) || []).map((i) => i.dhcp || {});
}

async function machines() {
  const [list, bmcs] = await Promise.all([
    api("/api/v1/hardware"),
    api("/api/v1/bmcs").catch(() => ({ items: [] })),
  ]);
  const power = {};
  for (const b of bmcs.items || []) power[b.hardware_id] = b.power_state || b.power_error || "";
  const search = el("input", { type: "search", placeholder: "search id, MAC or address", id: "search" });
  const body = el("tbody");
  const rows = (list.items || []).map((hw) => {
    const nics = interfaces(hw);
    const macs = nics.map((d) => d.mac).filter(Boolean).join(" ");
    const ips = nics.map((d) => d.ip && d.ip.address).filter(Boolean).join(" ");
    const row = el("tr", { "data-id": hw.id },
      el("td", {}, el("a", { href: "#/machines/" + encodeURIComponent(hw.id) }, hw.id)),
      el("td", { class: "mono" }, macs),
      el("td", { class: "mono" }, ips),
      el("td", {}, power[hw.id] || ""));
    row.dataset.text = (hw.id + " " + macs + " " + ips).toLowerCase();
    return row;
  });
  body.append(...rows);
  search.addEventListener("input", () => {
    const q = search.value.toLowerCase();
    for (const row of rows) row.hidden = q !== "" && !row.dataset.text.includes(q);
  });
  clear(main);
  main.append(el("h1", {}, "Machines"), search,
    el("table", { id: "machines" }, el("thead", {}, el("tr", {},
      el("th", {}, "Machine"), el("th", {}, "MACs"), el("th", {}, "Addresses"), el("th", {}, "Power"))), body));
  onChange = (change) => { if (change.kind === "hardware") route(); };
}

// The timeline as bars: each step's width is the time until the next one.
function timelineChart(steps) {
  const width = 900;
  const rowHeight = 18;
  const svgNS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(svgNS, "svg");
  svg.setAttribute("class", "timeline");
  svg.setAttribute("id", "timeline-chart");
  svg.setAttribute("width", String(width));
  svg.setAttribute("height", String(rowHeight * steps.length + 24));
  if (steps.length === 0) return svg;
  const first = steps[0].at;
  const last = Math.max(steps[steps.length - 1].at, first + 1);
  const x = (t) => 170 + ((t - first) / (last - first)) * (width - 260);
  steps.forEach((step, i) => {
    const next = i + 1 < steps.length ? steps[i + 1].at : step.at;
    const label = document.createElementNS(svgNS, "text");
    label.setAttribute("x", "4");
    label.setAttribute("y", String(i * rowHeight + 14));
    label.setAttribute("font-size", "12");
    label.textContent = step.step;
    const bar = document.createElementNS(svgNS, "rect");
    bar.setAttribute("x", String(x(step.at)));
    bar.setAttribute("y", String(i * rowHeight + 3));
    bar.setAttribute("width", String(Math.max(2, x(next) - x(step.at))));
    bar.setAttribute("height", String(rowHeight - 6));
    bar.setAttribute("fill", step.step.startsWith("action") ? "#2e7d32" : "#1565c0");
    const title = document.createElementNS(svgNS, "title");
    title.textContent = step.detail;
    bar.append(title);
    svg.append(label, bar);
  });
  const total = document.createElementNS(svgNS, "text");
  total.setAttribute("x", String(width - 84));
  total.setAttribute("y", String(rowHeight * steps.length + 18));
  total.setAttribute("font-size", "12");
  total.textContent = ((last - first) / 1000).toFixed(1) + " s in all";
  svg.append(total);
  return svg;
}

async function machine(id) {
  const path = "/api/v1/hardware/" + encodeURIComponent(id);
  const [hw, timeline, logs, inventory, bmc] = await Promise.all([
    api(path),
    api(path + "/timeline?limit=200"),
    api(path + "/logs?limit=50").catch(() => ({ items: [] })),
    api(path + "/inventory").catch(() => null),
    api(path + "/bmc").catch(() => null),
  ]);
  const steps = timeline.items || [];
  const stage = steps.length ? steps[steps.length - 1] : null;
  const rows = steps.map((s, i) => el("tr", {},
    el("td", { class: "mono" }, when(s.at)),
    el("td", {}, i ? "+" + ((s.at - steps[i - 1].at) / 1000).toFixed(3) + " s" : ""),
    el("td", {}, s.step),
    el("td", { class: "mono" }, s.detail)));
  const actions = el("p", { class: "actions" });
  if (bmc) {
    const act = (label, run) => el("button", { type: "button", "data-bmc": label, onclick: async () => {
      if (!confirm(label + " " + hw.id + "?")) return;
      try { await run(); status.textContent = label + ": done"; } catch (e) { status.textContent = label + ": " + e.message; }
    } }, label);
    const power = (action) => () => api(path + "/power", { method: "POST", body: JSON.stringify({ action }) });
    actions.append(
      act("Power on", power("on")), act("Power off", power("off")), act("Power cycle", power("cycle")),
      act("Network boot", () => api(path + "/netboot", { method: "POST", body: JSON.stringify({}) })));
  }
  const status = el("span", { id: "bmc-status" });
  actions.append(status);
  clear(main);
  main.append(
    el("h1", {}, "Machine " + hw.id),
    el("p", { id: "stage" }, stage ? "Last step: " + stage.step + " at " + when(stage.at) + " — " + stage.detail : "No boot recorded yet."),
    bmc ? el("p", {}, "BMC: " + bmc.record.protocol + " " + bmc.record.address + ", power " + (bmc.record.power_state || "unknown")) : el("p", {}, "No BMC."),
    actions,
    el("h2", {}, "Last boot"),
    timelineChart(steps),
    el("table", { id: "timeline" }, el("thead", {}, el("tr", {},
      el("th", {}, "Time"), el("th", {}, "After"), el("th", {}, "Step"), el("th", {}, "Detail"))), el("tbody", {}, rows)),
    el("h2", {}, "Boot log"),
    el("pre", { id: "syslog" }, (logs.items || []).map((l) => when(l.at) + " " + (l.app || "") + ": " + l.message).join("\n") || "(nothing)"),
    el("h2", {}, "Inventory"),
    el("pre", { id: "inventory" }, inventory ? JSON.stringify(inventory.facts, null, 2) : "(no worker has reported yet)"));
  const mine = new Set(interfaces(hw).map((d) => (d.mac || "").toLowerCase()).concat([hw.id.toLowerCase()]));
  onChange = (change) => {
    const ours = (change.workers || []).some((w) => mine.has(w.toLowerCase()));
    if (ours || change.id === hw.id) route();
  };
}

function progress(wf) {
  const all = (wf.tasks || []).flatMap((t) => t.actions || []);
  const done = all.filter((a) => a.state === "SUCCESS").length;
  const current = all.find((a) => a.state === "RUNNING");
  return { done, total: all.length, current: current ? current.name : "" };
}

function workflowRow(wf) {
  const p = progress(wf);
  const pct = p.total ? Math.round((100 * p.done) / p.total) : 0;
  const fill = el("span");
  fill.style.width = pct + "%"; // the CSSOM, which the page's policy allows
  const bar = el("span", { class: "bar" }, fill);
  return el("tr", { "data-id": wf.id },
    el("td", { class: "mono" }, el("a", { href: "#/workflows/" + encodeURIComponent(wf.id) }, wf.id)),
    el("td", {}, wf.template_name || wf.template_id),
    el("td", {}, wf.hardware_id || Object.values(wf.hardware_map || {}).join(" ")),
    stateCell(wf.state),
    el("td", { "data-progress": p.done + "/" + p.total }, bar, " " + p.done + "/" + p.total + " " + p.current),
    el("td", { class: "mono" }, when(wf.updated_at)));
}

async function workflows() {
  const list = await api("/api/v1/workflows");
  const body = el("tbody");
  const items = (list.items || []).slice().reverse();
  body.append(...items.map(workflowRow));
  clear(main);
  main.append(el("h1", {}, "Workflows"),
    el("table", { id: "workflows" }, el("thead", {}, el("tr", {},
      el("th", {}, "Workflow"), el("th", {}, "Template"), el("th", {}, "Machine"), el("th", {}, "State"),
      el("th", {}, "Progress"), el("th", {}, "Updated"))), body));
  // Changes that arrive together are fetched once each, a moment later:
  // a boot storm's thousands of reports do not become thousands of GETs.
  const pending = new Set();
  let timer = null;
  const rowOf = (id) => body.querySelector('tr[data-id="' + CSS.escape(id) + '"]');
  const flush = async () => {
    timer = null;
    const ids = [...pending].slice(0, 50);
    for (const id of ids) pending.delete(id);
    for (const id of ids) {
      try {
        const wf = await api("/api/v1/workflows/" + encodeURIComponent(id));
        const row = workflowRow(wf);
        // Looked up after the fetch: another update may have added it.
        const existing = rowOf(id);
        if (existing) existing.replaceWith(row); else body.prepend(row);
      } catch (_) {
        const existing = rowOf(id);
        if (existing) existing.remove(); // gone meanwhile
      }
    }
    if (pending.size && !timer) timer = setTimeout(flush, 250);
  };
  onChange = (change) => {
    if (change.kind !== "workflow") return;
    if (change.op === "delete") {
      const existing = rowOf(change.id);
      if (existing) existing.remove();
      pending.delete(change.id);
      return;
    }
    pending.add(change.id);
    if (!timer) timer = setTimeout(flush, 250);
  };
}

async function workflow(id) {
  const path = "/api/v1/workflows/" + encodeURIComponent(id);
  const [wf, logs] = await Promise.all([api(path), api(path + "/logs").catch(() => ({ items: [] }))]);
  const rows = (wf.tasks || []).flatMap((t) => (t.actions || []).map((a) => el("tr", {},
    el("td", {}, t.name), el("td", {}, a.name), el("td", { class: "mono" }, a.image), stateCell(a.state),
    el("td", {}, a.duration_ms !== undefined && a.duration_ms !== null ? (a.duration_ms / 1000).toFixed(1) + " s" : ""),
    el("td", {}, a.message || ""))));
  clear(main);
  main.append(el("h1", {}, "Workflow " + wf.id),
    el("p", {}, "Template " + (wf.template_name || wf.template_id) + ", state ", el("span", { class: "state-" + wf.state, id: "wf-state" }, wf.state),
      wf.message ? " — " + wf.message : ""),
    el("table", { id: "actions" }, el("thead", {}, el("tr", {},
      el("th", {}, "Task"), el("th", {}, "Action"), el("th", {}, "Image"), el("th", {}, "State"),
      el("th", {}, "Took"), el("th", {}, "Message"))), el("tbody", {}, rows)),
    el("h2", {}, "Action logs"),
    el("pre", { id: "action-logs" }, (logs.items || []).map((l) => (l.action || "") + ": " + (l.line || l.message || "")).join("\n") || "(nothing)"));
  onChange = (change) => { if (change.kind === "workflow" && change.id === id) route(); };
}

async function templates() {
  const list = await api("/api/v1/templates");
  const name = el("input", { id: "template-name", placeholder: "name", required: "" });
  const text = el("textarea", { id: "template-data", rows: "16", placeholder: "version: \"0.1\"\nname: …\ntasks: …" });
  const result = el("p", { id: "template-result" });
  const form = el("form", { id: "template-form", onsubmit: async (event) => {
    event.preventDefault();
    text.classList.remove("bad");
    try {
      await api("/api/v1/templates", { method: "POST", body: JSON.stringify({ name: name.value, data: text.value }) });
      result.className = "";
      result.textContent = "Created " + name.value + ".";
      route();
    } catch (error) {
      result.className = "error";
      const line = /line (\d+)/.exec(error.message);
      result.textContent = (error.field ? error.field + ": " : "") + error.message;
      text.classList.add("bad");
      if (line) {
        // Put the cursor on the line the error names.
        const lines = text.value.split("\n");
        const at = lines.slice(0, Number(line[1]) - 1).join("\n").length + (Number(line[1]) > 1 ? 1 : 0);
        text.focus();
        text.setSelectionRange(at, at + (lines[Number(line[1]) - 1] || "").length);
      }
    }
  } }, el("p", {}, name), text, el("p", {}, el("button", { type: "submit" }, "Create")), result);
  clear(main);
  main.append(el("h1", {}, "Templates"),
    el("table", { id: "templates" }, el("thead", {}, el("tr", {}, el("th", {}, "Name"), el("th", {}, "Id"), el("th", {}, "Updated"))),
      el("tbody", {}, (list.items || []).map((t) => el("tr", {}, el("td", {}, t.name), el("td", { class: "mono" }, t.id), el("td", {}, when(t.updated_at)))))),
    el("h2", {}, "New template"), form);
  onChange = null;
}

async function route() {
  if (!token) return;
  const hash = location.hash || "#/workflows";
  let view;
  let id;
  try {
    [, view, id] = hash.split("/").map(decodeURIComponent);
  } catch (_) {
    view = "workflows"; // a malformed address: the default view
  }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("current", link.id === "nav-" + view);
  }
  onChange = null;
  try {
    if (view === "machines" && id) await machine(id);
    else if (view === "machines") await machines();
    else if (view === "workflows" && id) await workflow(id);
    else if (view === "templates") await templates();
    else await workflows();
  } catch (error) {
    if (error.message !== "unauthorized") {
      clear(main);
      main.append(el("p", { class: "error" }, error.message));
    }
  }
}

function start() {
  document.getElementById("login").hidden = true;
  document.getElementById("nav").hidden = false;
  route();
  followChanges();
}

window.addEventListener("hashchange", route);
if (token) start(); else signOut("");
