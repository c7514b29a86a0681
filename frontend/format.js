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

/** "just now", "12 s ago", "1 min 20 s ago", "3 h 5 min ago", "2 d 4 h ago": precise to
 * the second for the first hour, then to the minute, then to the hour. */
export function age(ms, now) {
  const seconds = Math.floor((now - ms) / 1000);
  if (seconds < 1) return "just now";
  if (seconds < 60) return seconds + " s ago";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min " + (seconds % 60) + " s ago";
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return hours + " h " + (minutes % 60) + " min ago";
  return Math.floor(hours / 24) + " d " + (hours % 24) + " h ago";
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

/** 5000000 -> "5M", 250000 -> "250k": volumes at a glance. */
export function compactNumber(value) {
  const number = Number(value);
  for (const [size, suffix] of [[1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(number) >= size) return shortNumber(number / size) + suffix;
  }
  return shortNumber(number);
}

function patterns(list) {
  return list.length > 3 ? list.slice(0, 3).join(", ") + " …" : list.join(", ");
}

/** One rule: "±2 % within 60 s · cooldown 60 s" or "+3 % / −2 % within 5 min · …", then
 * its options: escalation step, volume floor, allow/deny lists, overrides. */
export function describeRule(rule) {
  const up = shortNumber(rule.threshold_up_pct);
  const down = shortNumber(rule.threshold_down_pct);
  const move = up === down ? "±" + up + " %" : "+" + up + " % / −" + down + " %";
  let text = move + " within " + duration(rule.window_s);
  if (rule.cooldown_s !== undefined && rule.cooldown_s !== null) {
    text += " · cooldown " + duration(rule.cooldown_s);
  }
  if (Number(rule.escalation_step_pct) > 0) {
    text += " · again every +" + shortNumber(rule.escalation_step_pct) + " %";
  }
  if (Number(rule.min_quote_volume) > 0) {
    text += " · 24 h volume ≥ " + compactNumber(rule.min_quote_volume);
  }
  if (Array.isArray(rule.allow) && rule.allow.length) text += " · only " + patterns(rule.allow);
  if (Array.isArray(rule.deny) && rule.deny.length) text += " · not " + patterns(rule.deny);
  if (Array.isArray(rule.overrides) && rule.overrides.length) {
    text += " · " + rule.overrides.length
      + (rule.overrides.length === 1 ? " override" : " overrides");
  }
  return text;
}

/** Every rule in force, or a plain sentence when there is none. Rules are named when there
 * are several, or when the only one is not the default. */
export function describeRules(rules) {
  if (!Array.isArray(rules) || rules.length === 0) return "not announced yet";
  const named = rules.length > 1 || (rules[0].name && rules[0].name !== "default");
  return rules.map((rule) => (named && rule.name ? rule.name + ": " : "")
    + describeRule(rule)).join("; ");
}

/** "×2" for the second alert of an escalating move; "" for a first alert. */
export function levelBadge(level) {
  const number = Number(level);
  return Number.isInteger(number) && number > 1 ? "×" + number : "";
}

/** Screen-reader sentence for one alert: "BTCUSDT up 3.10 %". */
export function spokenAlert(alert) {
  return alert.symbol + " " + (alert.direction === "up" ? "up" : "down") + " "
    + Math.abs(Number(alert.change_pct)).toFixed(2) + " %";
}
