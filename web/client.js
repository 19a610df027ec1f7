// The browser client: sign in as a SIP user (a REGISTER checks the password), call a
// service over SIP-over-WebSocket, and open each answering shop in a frame by posting the
// session token to its URL (decision 0004: the token never goes into a URL). "Leave" sends
// BYE for that shop. Errors are said in plain words.
"use strict";

const $ = (id) => document.getElementById(id);
let ua = null;
let config = null;

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function explain(status) {
  switch (status) {
    case 401: case 403: case 407: return "Wrong user name or password.";
    case 404: case 484: return "There is no such service.";
    case 480: case 486: case 600: return "The shop is busy right now. Try again in a moment.";
    case 503: return "No shop can take your request right now (they are busy or unreachable). Try again later.";
    case 408: return "The shop did not answer in time.";
    case 429: return "Too many attempts: wait a little before trying again.";
    default: return `The call failed (${status}).`;
  }
}

async function loadConfig() {
  const resp = await fetch("/web/config.json");
  config = await resp.json();
  $("service").replaceChildren(...config.services.map((s) => {
    const o = document.createElement("option");
    o.value = s.address;
    o.textContent = s.address + (s.fork_mode === "all_answers" ? " (compare shops)" : "");
    return o;
  }));
}

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  say("Signing in…");
  const user = $("user").value.trim(), password = $("password").value;
  const candidate = new SipUA({ wsUrl: config.ws_url, domain: config.domain, user, password });
  try {
    await candidate.connect();
    const status = await candidate.register();
    if (status !== 200) { candidate.close(); say(explain(status), true); return; }
  } catch (e) { say(e.message, true); return; }
  ua = candidate;
  ua.onDialogEnded = (d, why) => endVisit(d, why);
  $("signin").hidden = true;
  $("call").hidden = false;
  $("who").textContent = "as " + user;
  say("Signed in as " + user + ".");
});

$("signout-button").addEventListener("click", async () => {
  for (const d of [...ua.dialogs.values()]) await d.bye();
  ua.close();
  ua = null;
  $("visits").replaceChildren();
  $("call").hidden = true;
  $("signin").hidden = false;
  say("Signed out.");
});

$("call-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const service = $("service").value;
  say("Calling " + service + "…");
  let opened = 0;
  try {
    const resp = await ua.invite("sip:" + service, $("request").value, (dialog) => { opened++; openVisit(dialog); });
    if (resp.status >= 300) say(explain(resp.status), true);
    else say(opened > 1 ? "Two shops answered: compare them side by side." : "Connected.");
  } catch (e) { say(e.message, true); }
});

// The user's own statement: the relay checks the same name and password over HTTP Basic.
$("my-statement-button").addEventListener("click", async () => {
  const resp = await fetch("/web/my-statement", {
    headers: { Authorization: "Basic " + btoa(unescape(encodeURIComponent(ua.user + ":" + ua.password))) },
  });
  if (!resp.ok) { say(resp.status === 429 ? "Too many attempts: wait a minute." : "Wrong user name or password.", true); return; }
  const st = await resp.json();
  const money = (m) => `${(m.amount / 100).toFixed(2)} ${m.currency}`;
  const body = $("my-statement-lines").querySelector("tbody");
  const line = (cells) => {
    const tr = document.createElement("tr");
    for (const c of cells) { const td = document.createElement("td"); td.textContent = c; tr.append(td); }
    return tr;
  };
  body.replaceChildren(
    ...st.sessions.map((s) => line(["time", s.app_server, `${s.service}, ${(s.duration_ms / 1000).toFixed(1)} s`, s.time_charge ? money(s.time_charge) : ""])),
    ...st.charges.map((c) => line(["item", "", `${c.quantity} × ${c.description}`, money(c)])),
    ...st.adjustments.map((a) => line(["adjustment", "", a.reason, money(a)])),
    line(["total", "", "", st.totals.map(money).join(", ") || "0"]),
  );
  $("my-statement").hidden = false;
});

function openVisit(dialog) {
  const name = "visit-" + dialog.session_id;
  const box = document.createElement("div");
  box.className = "visit";
  box.id = name + "-box";
  const bar = document.createElement("div");
  bar.className = "bar";
  const label = document.createElement("span");
  label.textContent = new URL(dialog.url).host;
  const leave = document.createElement("button");
  leave.textContent = "Leave this shop";
  leave.className = "leave";
  leave.addEventListener("click", async () => {
    leave.disabled = true;
    await dialog.bye();
    endVisit(dialog, "You left the shop. Your bill is in the console.");
  });
  bar.append(label, leave);
  const frame = document.createElement("iframe");
  frame.name = name;
  frame.title = "shop";
  box.append(bar, frame);
  $("visits").append(box);
  // The token goes to the shop in a POST body, never in a URL.
  const form = document.createElement("form");
  form.method = "post";
  form.action = dialog.url;
  form.target = name;
  const input = document.createElement("input");
  input.type = "hidden";
  input.name = "token";
  input.value = dialog.token;
  form.append(input);
  document.body.append(form);
  form.submit();
  form.remove();
}

function endVisit(dialog, why) {
  const box = $("visit-" + dialog.session_id + "-box");
  if (box) box.remove();
  say(why);
}

loadConfig().catch(() => say("The relay did not give its settings.", true));
