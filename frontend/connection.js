// The gateway connection: /ws on the page's own origin, resumed from the last alert seen.
//
// Server to client (JSON text):
//   {"type":"history","alerts":[...],"resumed":true?}  first, oldest first
//   {"type":"alert","alert":{...}}                    a live alert
//   {"type":"alerts","alerts":[...]}                  several live alerts, oldest first
//   {"type":"rules","rules":[...]}                    after the history and on every change
//   {"type":"health","health":{...}}                  pipeline health (health.js)
//   {"type":"ping","t":ms}                            heartbeat, about every 15 s
//   {"type":"error","code":"bad_since"|"unknown_since",...} then close 4400 / 4404
//
// A connection that says nothing at all for `deadAfterMs` is treated as dead (a proxy or
// a sleeping laptop can leave a socket that looks open). Reconnects back off exponentially
// with jitter, and start over after a connection that delivered its history.

const CLOSE_REASONS = {
  1000: "closed",
  1001: "server going away",
  1006: "connection lost",
  1008: "refused by the server",
  1011: "server error",
  1012: "server restarting",
  1013: "server busy",
};
const RESYNC_CODES = new Set([4400, 4404]);

export class Connection {
  /**
   * @param {object} options
   * @param {(message: object) => void} options.onMessage every message but errors
   * @param {(state: string, detail: string) => void} options.onStatus
   *     state: "connecting" | "live" | "down"
   * @param {() => (string|null)} options.lastId the newest alert id seen, for ?since=
   */
  constructor({ onMessage, onStatus, lastId, deadAfterMs, retryMinMs, retryMaxMs }) {
    this.onMessage = onMessage;
    this.onStatus = onStatus;
    this.lastId = lastId;
    this.deadAfterMs = deadAfterMs;
    this.retryMinMs = retryMinMs;
    this.retryMaxMs = retryMaxMs;
    this.socket = null;
    this.attempts = 0;
    this.resumable = true;
    this.watchdog = null;
    this.retryTimer = null;
    this.serverError = null;
    window.addEventListener("online", () => this.retryNow());
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.retryNow();
    });
  }

  url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const since = this.resumable ? this.lastId() : null;
    return scheme + "//" + location.host + "/ws"
      + (since ? "?since=" + encodeURIComponent(since) : "");
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
    this.serverError = null;
    if (navigator.onLine === false) {
      // No network at all: wait for the "online" event (and check now and then anyway).
      this.onStatus("down", "no network");
      this.retryTimer = setTimeout(() => this.connect(), this.retryMaxMs);
      return;
    }
    let socket;
    try {
      socket = new WebSocket(this.url());
    } catch (error) {
      console.warn("cannot open the alerts connection", error);
      this.scheduleRetry("cannot connect");
      return;
    }
    this.socket = socket;
    // While retrying, the page stays "offline" (one announcement, not one per attempt).
    if (this.attempts === 0) this.onStatus("connecting", "");
    else this.onStatus("down", "reconnecting…");
    socket.addEventListener("open", () => {
      if (socket === this.socket) this.armWatchdog();
    });
    socket.addEventListener("message", (event) => {
      if (socket === this.socket) this.receive(event.data);
    });
    socket.addEventListener("close", (event) => {
      if (socket === this.socket) this.closed(event.code, event.reason);
    });
  }

  /** Reconnect at once if a retry is pending (the network came back, the tab is visible). */
  retryNow() {
    if (this.retryTimer !== null) this.connect();
  }

  receive(data) {
    this.armWatchdog();
    let message;
    try {
      message = JSON.parse(data);
    } catch (error) {
      console.warn("ignoring a message that is not JSON", error);
      return;
    }
    if (!message || typeof message !== "object") return;
    if (message.type === "error") {
      this.serverError = message;
      console.info("gateway:", message.code, message.message);
      return;
    }
    if (message.type === "history") {
      this.attempts = 0;
      this.resumable = true;
      this.onStatus("live", "");
    }
    this.onMessage(message);
  }

  armWatchdog() {
    clearTimeout(this.watchdog);
    this.watchdog = setTimeout(() => this.dead(), this.deadAfterMs);
  }

  dead() {
    const socket = this.socket;
    if (!socket) return;
    this.socket = null;
    clearTimeout(this.watchdog);
    // Detached first: the close handshake of a dead peer may take long or never end.
    socket.close(4000, "no heartbeat");
    this.scheduleRetry("no data from the server");
  }

  closed(code, reason) {
    this.socket = null;
    clearTimeout(this.watchdog);
    const errorCode = this.serverError && this.serverError.code;
    if (RESYNC_CODES.has(code) || errorCode === "bad_since" || errorCode === "unknown_since") {
      // The gateway cannot resume from our id: take the full history instead, merged by id.
      this.resumable = false;
      this.onStatus("connecting", "catching up");
      this.retryTimer = setTimeout(() => this.connect(), 0);
      return;
    }
    this.scheduleRetry(reason || CLOSE_REASONS[code] || "disconnected (" + code + ")");
  }

  scheduleRetry(why) {
    const ceiling = Math.min(this.retryMaxMs, this.retryMinMs * 2 ** this.attempts);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempts += 1;
    this.onStatus("down", why + ", retrying in " + Math.max(1, Math.round(delay / 1000)) + " s");
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }
}
