// Interop: JsSIP (a third-party SIP library, npm `jssip`) in Node over the `ws` package
// registers with the relay, calls a service and hangs up, through SIP over WebSocket
// (RFC 7118). Node has no WebRTC, so RTCPeerConnection is a stand-in that offers a fixed SDP
// and accepts any answer (the shop answers with the URL-and-token JSON, not SDP); everything
// on the wire is JsSIP's own.
//
// Usage: node jssip.mjs WS_URL DOMAIN USER PASSWORD SERVICE
import JsSIP from "jssip";
import WebSocket from "ws";

const [wsUrl, domain, user, password, service] = process.argv.slice(2);

globalThis.window = globalThis;
globalThis.WebSocket = WebSocket;
globalThis.RTCSessionDescription = class {
  constructor(init) { Object.assign(this, init); }
};
globalThis.RTCPeerConnection = class extends EventTarget {
  constructor() {
    super();
    this.iceGatheringState = "complete";
    this.iceConnectionState = "new";
    this.signalingState = "stable";
    this.localDescription = null;
  }
  async createOffer() {
    return { type: "offer", sdp: "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n" };
  }
  async createAnswer() { return this.createOffer(); }
  async setLocalDescription(d) { this.localDescription = d; }
  async setRemoteDescription(d) { this.remoteDescription = d; }
  getSenders() { return []; }
  addTrack() {}
  close() {}
};

const fail = (why) => { console.error("jssip: " + why); process.exit(1); };
setTimeout(() => fail("timed out"), 20000).unref();

const ua = new JsSIP.UA({
  sockets: [new JsSIP.WebSocketInterface(wsUrl)],
  uri: `sip:${user}@${domain}`,
  password,
  register: true,
  session_timers: false,
  user_agent: "JsSIP interop test",
});
ua.on("registrationFailed", (e) => fail("registration failed: " + e.cause));
ua.on("registered", () => {
  console.log("jssip: registered");
  const session = ua.call(`sip:${service}`, {
    mediaConstraints: { audio: false, video: false },
    pcConfig: {},
  });
  session.on("failed", (e) => fail(`call failed: ${e.cause} ${e.message ? e.message.status_code : ""}`));
  session.on("accepted", (e) => {
    const body = JSON.parse(e.response.body);
    if (!body.url || !body.token) fail("no URL and token in the 200: " + e.response.body);
    console.log("jssip: answered with " + body.url);
  });
  session.on("confirmed", () => {
    console.log("jssip: confirmed");
    session.terminate();
  });
  session.on("ended", (e) => {
    console.log("jssip: ended by " + e.originator);
    ua.stop();
    console.log("jssip: ok");
    setTimeout(() => process.exit(0), 200);
  });
});
ua.start();
