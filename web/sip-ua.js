// A small SIP user agent over WebSocket (RFC 7118) for the browser client: REGISTER and
// INVITE with digest MD5 (RFC 3261 §22, RFC 2617 qop=auth), ACK, BYE, and answering the far
// side's BYE. Several 200s to one INVITE (a service forked in "all answers" mode) become
// several dialogs. Written for Tollgate; no dependencies beyond md5.js.
"use strict";

const COMPACT = { v: "via", f: "from", t: "to", i: "call-id", m: "contact", l: "content-length", c: "content-type" };

function rand(n = 10) {
  const a = new Uint8Array(n);
  crypto.getRandomValues(a);
  return Array.from(a, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Parses one SIP message (a WebSocket frame holds exactly one). */
function parseSip(text) {
  const split = text.indexOf("\r\n\r\n");
  const head = split < 0 ? text : text.slice(0, split);
  const body = split < 0 ? "" : text.slice(split + 4);
  const lines = head.split("\r\n");
  const first = lines.shift();
  const headers = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    let name = line.slice(0, i).trim().toLowerCase();
    name = COMPACT[name] || name;
    (headers[name] = headers[name] || []).push(line.slice(i + 1).trim());
  }
  const m = /^SIP\/2\.0 (\d{3}) ?(.*)$/.exec(first);
  if (m) return { status: Number(m[1]), reason: m[2], headers, body };
  const [method, uri] = first.split(" ");
  return { method, uri, headers, body };
}

/** Splits header values on commas that are outside <> and quotes. */
function splitList(values) {
  const out = [];
  for (const v of values || []) {
    let depth = 0, quoted = false, start = 0;
    for (let i = 0; i < v.length; i++) {
      const ch = v[i];
      if (ch === '"') quoted = !quoted;
      else if (!quoted && ch === "<") depth++;
      else if (!quoted && ch === ">") depth--;
      else if (!quoted && depth === 0 && ch === ",") { out.push(v.slice(start, i).trim()); start = i + 1; }
    }
    out.push(v.slice(start).trim());
  }
  return out.filter((x) => x);
}

function param(value, name) {
  const m = new RegExp(";\\s*" + name + "=([^;>\\s]+)", "i").exec(value.slice(value.lastIndexOf(">") + 1));
  return m ? m[1] : null;
}

function uriOf(value) {
  const m = /<([^>]*)>/.exec(value);
  return m ? m[1] : value.split(";")[0].trim();
}

function digestParams(challenge) {
  const out = {};
  const re = /(\w+)=(?:"([^"]*)"|([^,\s]+))/g;
  let m;
  while ((m = re.exec(challenge))) out[m[1].toLowerCase()] = m[2] !== undefined ? m[2] : m[3];
  return out;
}

class SipUA {
  /** @param {{wsUrl: string, domain: string, user: string, password: string}} o */
  constructor(o) {
    Object.assign(this, o);
    this.host = rand(6) + ".invalid";
    this.contact = `<sip:${o.user}@${this.host};transport=ws>`;
    this.pending = new Map(); // branch → {resolve, onResponse}
    this.dialogs = new Map(); // call-id + to-tag → dialog
    this.onDialogEnded = () => {};
  }

  connect() {
    return new Promise((resolve, reject) => {
      this.ws = new WebSocket(this.wsUrl, "sip");
      this.ws.onopen = () => resolve();
      this.ws.onerror = () => reject(new Error("cannot reach the relay's WebSocket at " + this.wsUrl));
      this.ws.onmessage = (ev) => this.receive(typeof ev.data === "string" ? ev.data : new TextDecoder().decode(ev.data));
      this.ws.onclose = () => { for (const d of this.dialogs.values()) this.onDialogEnded(d, "connection closed"); };
    });
  }

  close() { if (this.ws) this.ws.close(); }

  send(text) { this.ws.send(text); }

  receive(text) {
    const msg = parseSip(text);
    if (msg.status) {
      const branch = param(msg.headers.via?.[0] || "", "branch");
      const tx = this.pending.get(branch);
      if (tx) tx.onResponse(msg);
      return;
    }
    // A request from the far side: BYE ends a dialog; anything else is simply accepted.
    this.send(this.response(msg, 200, "OK"));
    if (msg.method === "BYE") {
      const key = msg.headers["call-id"][0] + ";" + param(msg.headers.from[0], "tag");
      const d = this.dialogs.get(key);
      if (d) { this.dialogs.delete(key); this.onDialogEnded(d, "the shop ended the visit"); }
    }
  }

  response(req, status, reason) {
    const lines = [`SIP/2.0 ${status} ${reason}`];
    for (const v of req.headers.via || []) lines.push("Via: " + v);
    lines.push("From: " + req.headers.from[0]);
    lines.push("To: " + req.headers.to[0] + (param(req.headers.to[0], "tag") ? "" : ";tag=" + rand(4)));
    lines.push("Call-ID: " + req.headers["call-id"][0]);
    lines.push("CSeq: " + req.headers.cseq[0]);
    lines.push("Content-Length: 0", "", "");
    return lines.join("\r\n");
  }

  request({ method, uri, callId, fromTag, to, cseq, route = [], extra = [], body = "", contentType, branch }) {
    const lines = [
      `${method} ${uri} SIP/2.0`,
      `Via: SIP/2.0/${this.wsUrl.startsWith("wss:") ? "WSS" : "WS"} ${this.host};branch=${branch}`,
      "Max-Forwards: 70",
      ...route.map((r) => "Route: " + r),
      `From: <sip:${this.user}@${this.domain}>;tag=${fromTag}`,
      `To: ${to}`,
      `Call-ID: ${callId}`,
      `CSeq: ${cseq} ${method}`,
      `Contact: ${this.contact}`,
      "User-Agent: tollgate-web",
      ...extra,
    ];
    if (body) lines.push("Content-Type: " + (contentType || "text/plain"));
    const len = new TextEncoder().encode(body).length;
    lines.push("Content-Length: " + len, "", body);
    return lines.join("\r\n");
  }

  /** Sends a request and collects responses until `done(msg)` says the transaction is over. */
  transact(spec, onResponse) {
    const branch = "z9hG4bK" + rand(8);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(branch); reject(new Error("the relay did not answer")); }, 32000);
      this.pending.set(branch, {
        onResponse: (msg) => {
          if (msg.status < 200) return;
          if (onResponse && onResponse(msg, branch) === "more") return;
          clearTimeout(timer);
          // Extra 2xx of a forked INVITE keep arriving on this branch.
          if (spec.method !== "INVITE") this.pending.delete(branch);
          resolve(msg);
        },
      });
      this.send(this.request({ ...spec, branch }));
    });
  }

  authorization(resp, method, uri) {
    const header = resp.status === 407 ? "proxy-authenticate" : "www-authenticate";
    const challenge = (resp.headers[header] || []).find((c) => !/algorithm=(?!MD5\b)/i.test(c) || /algorithm=MD5\b/i.test(c));
    if (!challenge) return null;
    const p = digestParams(challenge.replace(/^Digest\s+/i, ""));
    const ha1 = md5(`${this.user}:${p.realm}:${this.password}`);
    const ha2 = md5(`${method}:${uri}`);
    const name = resp.status === 407 ? "Proxy-Authorization" : "Authorization";
    let value = `Digest username="${this.user}", realm="${p.realm}", nonce="${p.nonce}", uri="${uri}", algorithm=MD5`;
    if (p.qop && p.qop.split(",").map((q) => q.trim()).includes("auth")) {
      const cnonce = rand(8), nc = "00000001";
      value += `, qop=auth, nc=${nc}, cnonce="${cnonce}", response="${md5(`${ha1}:${p.nonce}:${nc}:${cnonce}:auth:${ha2}`)}"`;
    } else {
      value += `, response="${md5(`${ha1}:${p.nonce}:${ha2}`)}"`;
    }
    if (p.opaque) value += `, opaque="${p.opaque}"`;
    return `${name}: ${value}`;
  }

  /** REGISTER with digest: resolves to the final status (200 when the password is right). */
  async register() {
    const callId = rand(12), fromTag = rand(4), uri = `sip:${this.domain}`;
    const to = `<sip:${this.user}@${this.domain}>`;
    const spec = { method: "REGISTER", uri, callId, fromTag, to, cseq: 1, extra: ["Expires: 600"] };
    let resp = await this.transact(spec);
    if (resp.status === 401 || resp.status === 407) {
      const auth = this.authorization(resp, "REGISTER", uri);
      if (!auth) return resp.status;
      resp = await this.transact({ ...spec, cseq: 2, extra: ["Expires: 600", auth] });
    }
    return resp.status;
  }

  /**
   * INVITE `target` with `body`. Resolves to {status, reason, dialogs}: every 2xx is ACKed and
   * becomes a dialog {url, token, session_id, bye()}; `onDialog` is told of each as it comes.
   */
  async invite(target, body, onDialog) {
    const callId = rand(12), fromTag = rand(4);
    const base = { method: "INVITE", uri: target, callId, fromTag, to: `<${target}>`, body, contentType: "text/plain" };
    const answered = (cseq) => (msg, branch) => {
      if (msg.status >= 300) {
        // ACK for a failure: same branch, hop by hop (RFC 3261 §17.1.1.3).
        this.send(this.request({ ...base, method: "ACK", cseq, body: "", branch, to: msg.headers.to[0] }));
        return;
      }
      this.established(msg, base, cseq, onDialog);
      return undefined;
    };
    let resp = await this.transact({ ...base, cseq: 1 }, answered(1));
    if (resp.status === 401 || resp.status === 407) {
      const auth = this.authorization(resp, "INVITE", target);
      if (!auth) return resp;
      resp = await this.transact({ ...base, cseq: 2, extra: [auth] }, answered(2));
    }
    return resp;
  }

  established(msg, base, cseq, onDialog) {
    const toTag = param(msg.headers.to[0], "tag");
    const key = base.callId + ";" + toTag;
    if (this.dialogs.has(key)) return; // a retransmitted 200: the ACK below already went
    const routeSet = splitList(msg.headers["record-route"]).reverse();
    const remote = uriOf(msg.headers.contact[0]);
    let info = {};
    try { info = JSON.parse(msg.body); } catch (e) { info = { url: msg.body.trim() }; }
    const dialog = {
      ...info, callId: base.callId, fromTag: base.fromTag, to: msg.headers.to[0], remote, routeSet, cseq,
      bye: () => this.bye(dialog),
    };
    this.dialogs.set(key, dialog);
    this.send(this.request({
      method: "ACK", uri: remote, callId: base.callId, fromTag: base.fromTag, to: dialog.to, cseq,
      route: routeSet, branch: "z9hG4bK" + rand(8),
    }));
    if (onDialog) onDialog(dialog);
  }

  /** Ends one dialog: BYE, resolves to the final status. */
  async bye(dialog) {
    const key = dialog.callId + ";" + param(dialog.to, "tag");
    if (!this.dialogs.delete(key)) return 481;
    dialog.cseq += 1;
    const resp = await this.transact({
      method: "BYE", uri: dialog.remote, callId: dialog.callId, fromTag: dialog.fromTag, to: dialog.to,
      cseq: dialog.cseq, route: dialog.routeSet,
    });
    return resp.status;
  }
}

if (typeof module !== "undefined") module.exports = { SipUA, parseSip, splitList };
