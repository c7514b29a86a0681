// Pure formatting helpers: numbers, times, ages, the rule line. No DOM, no state.

const timeFormat = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23",
});
const fullFormat = new Intl.DateTimeFormat(undefined, {
  dateStyle: "medium", timeStyle: "medium",
});

/** "+3.10 %" / "-2.45 %": always signed, two decimals. */
export function signedPct(value) {
  const number = Number(value);
  return (number > 0 ? "+" : "") + number.toFixed(2) + " %";
}

/** Ten significant digits hide float noise (103.33000000000001) and keep every real tick. */
export function formatPrice(value) {
  return String(Number(Number(value).toPrecision(10)));
}

/** 2 -> "2", 2.5 -> "2.5", 1.25 -> "1.25": thresholds as people write them. */
export function shortNumber(value) {
  return String(Number(Number(value).toFixed(4)));
}

/** The exchange event time in the viewer's time zone, "14:03:07". */
export function localTime(ms) {
  return timeFormat.format(new Date(ms));
}

/** The full local date and time, for a tooltip. */
export function localDateTime(ms) {
  return fullFormat.format(new Date(ms));
}

/** "just now", "12 s ago", "4 min ago", "3 h ago", "2 d ago". */
export function age(ms, now) {
  const seconds = Math.floor((now - ms) / 1000);
  if (seconds < 1) return "just now";
  if (seconds < 60) return seconds + " s ago";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min ago";
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + " h ago";
  return Math.floor(hours / 24) + " d ago";
}

/** "60 s", "90 s", "5 min", "1 h 30 min". */
export function duration(seconds) {
  const s = Math.round(Number(seconds));
  if (s < 300 || (s < 3600 && s % 60 !== 0)) return s + " s";
  if (s < 3600) return s / 60 + " min";
  const h = Math.floor(s / 3600);
  const m = Math.round((s % 3600) / 60);
  return h + " h" + (m ? " " + m + " min" : "");
}

/** One rule: "±2 % within 60 s · cooldown 60 s" or "+3 % / −2 % within 5 min · …". */
export function describeRule(rule) {
  const up = shortNumber(rule.threshold_up_pct);
  const down = shortNumber(rule.threshold_down_pct);
  const move = up === down ? "±" + up + " %" : "+" + up + " % / −" + down + " %";
  let text = move + " within " + duration(rule.window_s);
  if (rule.cooldown_s !== undefined && rule.cooldown_s !== null) {
    text += " · cooldown " + duration(rule.cooldown_s);
  }
  return text;
}

/** Every rule in force, or a plain sentence when there is none. */
export function describeRules(rules) {
  if (!Array.isArray(rules) || rules.length === 0) return "not announced yet";
  return rules.map(describeRule).join("; ");
}

/** Screen-reader sentence for one alert: "BTCUSDT up 3.10 %". */
export function spokenAlert(alert) {
  return alert.symbol + " " + (alert.direction === "up" ? "up" : "down") + " "
    + Math.abs(Number(alert.change_pct)).toFixed(2) + " %";
}
