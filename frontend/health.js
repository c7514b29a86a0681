// The pipeline's health in the header: green, amber or red, with what the gateway sees on
// the bus ("watching 612 symbols · data 0.4 s old") and the reason when it is not ok.
//
// The gateway sends {"type":"health","health":{level, summary, reasons, symbols,
// newest_tick_ms, at_ms, components}} after the history and whenever the state changes,
// and every check (about 1 s) while it is not ok. Between messages, a stale state's age
// keeps counting here, in the browser. When the socket is lost the page cannot know the
// pipeline's state, and says so; the connection's own detail (retrying in…) stays in the
// header's connection status, the one place for it.

const LEVELS = new Set(["ok", "warn", "down"]);
const TICK_MS = 500;

export function formatAge(seconds) {
  const s = Math.max(0, seconds);
  if (s < 10) return s.toFixed(1) + " s";
  if (s < 120) return Math.round(s) + " s";
  return Math.round(s / 60) + " min";
}

export class HealthView {
  constructor(element) {
    this.element = element;
    this.text = element.querySelector(".health-text");
    this.reason = element.querySelector(".health-reason");
    this.health = null;
    this.receivedAt = 0;
    this.lostAt = null;
    setInterval(() => this.render(), TICK_MS);
  }

  /** A health message's body from the gateway. */
  show(health) {
    if (!health || !LEVELS.has(health.level)) return;
    this.health = health;
    this.receivedAt = Date.now();
    this.render();
  }

  /** The connection's state ("connecting" | "live" | "down"), from Connection.onStatus. */
  connection(state) {
    if (state === "down") {
      if (this.lostAt === null) this.lostAt = Date.now();
    } else if (state === "live") {
      this.lostAt = null;
    }
    this.render();
  }

  render() {
    const health = this.health;
    let level = "unknown";
    let text = "checking the pipeline…";
    let reason = "";
    if (this.lostAt !== null) {
      // How old this element's knowledge is; why the socket is gone is the status's to say.
      text = "pipeline state unknown";
      reason = "not connected for " + formatAge((Date.now() - this.lostAt) / 1000);
    } else if (health) {
      level = health.level;
      text = health.summary;
      reason = (health.reasons || []).join(" · ");
      if (level !== "ok" && typeof health.newest_tick_ms === "number") {
        // Nothing newer arrived since the gateway looked, so the data keeps ageing.
        const age = formatAge(
          (health.at_ms - health.newest_tick_ms + Date.now() - this.receivedAt) / 1000);
        text = text.replace(/data [0-9.]+ (s|min) old/, "data " + age + " old");
        reason = reason.replace(/exchange feed stale for [0-9.]+ (s|min)/,
          "exchange feed stale for " + age);
      }
    }
    this.element.className = "health health-" + level;
    this.element.dataset.level = level;
    if (this.text.textContent !== text) this.text.textContent = text;
    if (this.reason.textContent !== reason) this.reason.textContent = reason;
    this.element.title = reason ? text + " · " + reason : text;
  }
}
