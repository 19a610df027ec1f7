// The operator console: plain tables over the REST API with the operator key, refreshed
// every two seconds (live sessions without reloading), and two inline SVG charts.
"use strict";

const $ = (id) => document.getElementById(id);
let key = sessionStorage.getItem("tollgate-operator-key");

async function api(path) {
  const resp = await fetch(path, { headers: { Authorization: "Bearer " + key } });
  if (resp.status === 401) throw new Error("That operator key is not valid.");
  if (!resp.ok) throw new Error(`${path}: ${resp.status}`);
  return resp.json();
}

const money = (m) => (m ? `${(m.amount / 100).toFixed(2)} ${m.currency}` : "");
const sum = (list) => (list || []).map(money).join(", ") || "0";
const when = (t) => (t ? new Date(t).toLocaleTimeString() : "");
const secs = (ms) => (ms == null ? "" : (ms / 1000).toFixed(1) + " s");

function rows(id, items, cells) {
  const body = $(id).querySelector("tbody");
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    for (const c of cells(item)) {
      const td = document.createElement("td");
      if (c instanceof Node) td.append(c); else td.textContent = c == null ? "" : String(c);
      tr.append(td);
    }
    return tr;
  }));
}

function barChart(title, pairs, unit) {
  const w = 320, h = 140, max = Math.max(1, ...pairs.map((p) => p[1]));
  const bw = pairs.length ? (w - 20) / pairs.length : 0;
  const bars = pairs.map(([label, v], i) => {
    const bh = Math.round((v / max) * (h - 40));
    const x = 10 + i * bw;
    return `<rect x="${x}" y="${h - 20 - bh}" width="${Math.max(1, bw - 4)}" height="${bh}" fill="#3b6ea5"><title>${label}: ${v}${unit}</title></rect>` +
      (pairs.length <= 8 ? `<text x="${x}" y="${h - 6}" font-size="10">${label}</text>` : "");
  }).join("");
  return `<figure class="chart"><figcaption>${title}</figcaption><svg width="${w}" height="${h}" role="img" aria-label="${title}">${bars}</svg></figure>`;
}

async function refresh() {
  const [live, recent] = await Promise.all([
    api("/v1/sessions?state=confirmed&limit=100"),
    api("/v1/sessions?limit=100"),
  ]);
  $("live-count").textContent = `(${live.items.length})`;
  rows("live", live.items, (s) => [s.caller, s.service, s.app_server, when(s.confirmed_at)]);
  rows("recent", recent.items, (s) => [when(s.created_at), s.caller, s.service, s.app_server, s.state, s.final_status, secs(s.duration_ms), money(s.time_charge)]);
  const perMinute = new Map();
  const now = Date.now();
  for (let i = 14; i >= 0; i--) perMinute.set(i, 0);
  for (const s of recent.items) {
    const ago = Math.floor((now - Date.parse(s.created_at)) / 60000);
    if (perMinute.has(ago)) perMinute.set(ago, perMinute.get(ago) + 1);
  }
  const minutes = [...perMinute.entries()].map(([ago, n]) => [ago ? `-${ago}m` : "now", n]);
  const servers = await api("/v1/app-servers?limit=100");
  const settlements = await Promise.all(servers.items.map((a) => api(`/v1/app-servers/${a.id}/settlement`)));
  rows("settlements", settlements, (s) => [s.app_server, sum(s.gross), sum(s.commission), sum(s.net), s.sessions.length]);
  const revenue = settlements.map((s) => [s.app_server, (s.gross || []).reduce((t, m) => t + m.amount, 0) / 100]);
  $("charts").innerHTML = barChart("Sessions per minute (last 15 min)", minutes, "") + barChart("Revenue per shop (gross)", revenue, "");
  const deliveries = await api("/v1/webhook-deliveries?limit=20");
  rows("deliveries", deliveries.items, (d) => [when(d.attempted_at), d.event_type, d.url, d.attempt, d.status_code || d.error]);
}

async function loadStatic() {
  const users = await api("/v1/users?limit=100");
  rows("users", users.items, (u) => {
    const b = document.createElement("button");
    b.textContent = "Statement";
    b.className = "statement-button";
    b.dataset.user = u.name;
    b.addEventListener("click", () => showStatement(u));
    return [u.name, u.realm, b];
  });
  const services = await api("/v1/services?limit=100");
  const tariffs = await Promise.all(services.items.map((s) =>
    fetch(`/v1/services/${s.id}/tariff`, { headers: { Authorization: "Bearer " + key } }).then((r) => (r.ok ? r.json() : null))));
  rows("services", services.items, (s, i) => {
    const t = tariffs[services.items.indexOf(s)];
    const tariff = t ? `${(t.per_minute_amount / 100).toFixed(2)} ${t.currency}/min, per ${t.increment_secs} s, setup ${(t.setup_amount / 100).toFixed(2)}` : "none";
    return [s.address, s.app_servers.map((a) => a.name || a).join(", "), s.fork_mode, tariff];
  });
}

async function showStatement(user) {
  const [st, servers] = await Promise.all([api(`/v1/users/${user.id}/statement`), api("/v1/app-servers?limit=100")]);
  const shopName = new Map(servers.items.map((a) => [a.id, a.name]));
  const box = $("statement");
  box.innerHTML = "";
  const h = document.createElement("h3");
  h.textContent = `Statement of ${st.user}`;
  const table = document.createElement("table");
  table.id = "statement-lines";
  table.innerHTML = "<thead><tr><th>What</th><th>Shop</th><th>Detail</th><th>Amount</th></tr></thead>";
  const body = document.createElement("tbody");
  const add = (cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
    body.append(tr);
  };
  for (const s of st.sessions) add(["time", s.app_server, `${s.service}, ${secs(s.duration_ms)}`, money(s.time_charge)]);
  for (const c of st.charges) add(["item", shopName.get(c.app_server_id) || c.app_server_id, `${c.quantity} × ${c.description}`, money({ amount: c.amount, currency: c.currency })]);
  for (const a of st.adjustments) add(["adjustment", "", a.reason, money(a)]);
  add(["total", "", "", sum(st.totals)]);
  table.append(body);
  box.append(h, table);
}

async function open() {
  try {
    await loadStatic();
    await refresh();
  } catch (e) {
    $("status").textContent = e.message;
    $("status").className = "error";
    sessionStorage.removeItem("tollgate-operator-key");
    $("login").hidden = false;
    return;
  }
  $("login").hidden = true;
  $("console").hidden = false;
  $("status").textContent = "";
  setInterval(() => refresh().catch((e) => { $("status").textContent = e.message; }), 2000);
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  key = $("key").value.trim();
  sessionStorage.setItem("tollgate-operator-key", key);
  open();
});

if (key) open();
