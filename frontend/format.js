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

/** What a rule of its kind watches, with its thresholds: "±2 % within 60 s" (price),
 * "liquidations ≥ $1M within 60 s", "funding |rate| ≥ 0.1 %, once per funding period",
 * "volume ≥ 5× its mean per 60 s over 1 h, at least $250k". */
function ruleCondition(rule) {
  switch (kindOf(rule)) {
    case "liquidation":
      return "liquidations ≥ $" + compactNumber(rule.min_notional_usdt) + " within "
        + duration(rule.window_s);
    case "funding":
      return "funding |rate| ≥ " + shortNumber(rule.min_funding_rate_pct)
        + " %, once per funding period";
    case "volume":
      return "volume ≥ " + shortNumber(rule.volume_factor) + "× its mean per "
        + duration(rule.window_s) + " over " + duration(rule.baseline_s) + ", at least $"
        + compactNumber(rule.min_window_volume_usdt);
    default: {
      const up = shortNumber(rule.threshold_up_pct);
      const down = shortNumber(rule.threshold_down_pct);
      const move = up === down ? "±" + up + " %" : "+" + up + " % / −" + down + " %";
      return move + " within " + duration(rule.window_s);
    }
  }
}

/** One rule: "±2 % within 60 s · cooldown 60 s" or "+3 % / −2 % within 5 min · …" (or
 * what another kind watches, `ruleCondition`), then its options: cooldown (not for
 * funding, once per period), escalation step, volume floor, allow/deny lists, overrides. */
export function describeRule(rule) {
  let text = ruleCondition(rule);
  if (rule.cooldown_s !== undefined && rule.cooldown_s !== null
      && kindOf(rule) !== "funding") {
    text += " · cooldown " + duration(rule.cooldown_s);
  }
  if (Number(rule.escalation_step_pct) > 0) {
    text += " · again every +" + shortNumber(rule.escalation_step_pct) + " %";
  }
  if (Number(rule.escalation_step_usdt) > 0) {
    text += " · again every +$" + compactNumber(rule.escalation_step_usdt);
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

/** Screen-reader sentence for one alert: "BTCUSDT up 3.10 %", "BTCUSDT longs liquidated,
 * at least $2.4M". */
export function spokenAlert(alert) {
  switch (kindOf(alert)) {
    case "liquidation":
      return alert.symbol + " " + LIQUIDATED[alert.direction]
        + " liquidated, at least " + usd(alert.notional_usdt, true);
    case "funding":
      return alert.symbol + " funding " + ratePct(alert.funding_rate_pct);
    case "volume": {
      const ratio = volumeRatio(alert);
      return alert.symbol + " volume " + usd(alert.volume_usdt)
        + (ratio === null ? "" : ", " + ratio.toFixed(1) + " times its mean");
    }
    default:
      return alert.symbol + " " + (alert.direction === "up" ? "up" : "down") + " "
        + Math.abs(Number(alert.change_pct)).toFixed(2) + " %";
  }
}

// -- rule kinds (docs/architecture.md#rule-kinds) -------------------------------------------

export const KINDS = ["price", "liquidation", "funding", "volume"];
const MINUS = "\u2212";
// Who was liquidated (direction "down": longs) and who pays funding.
const LIQUIDATED = { down: "longs", up: "shorts" };
const PAYS = { up: "longs pay", down: "shorts pay" };

/** A figure of the alert as a number, or null when it is missing (null is not 0 here). */
function known(value) {
  const number = Number(value);
  return value === null || value === undefined || !Number.isFinite(number) ? null : number;
}

/** The alert's kind; an alert written before kinds is a price alert. */
export function kindOf(alert) {
  return KINDS.includes(alert.kind) ? alert.kind : "price";
}

/** "$2.4M", "$12M", "$950". With `atLeast` rounded down, so that "≥ $2.4M" stays true. */
export function usd(value, atLeast = false) {
  const number = known(value);
  if (number === null) return "?";
  for (const [size, suffix] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(number) >= size) {
      const scaled = number / size;
      const digits = Math.abs(scaled) < 10 ? 1 : 0;
      const shown = atLeast ? Math.floor(scaled * 10 ** digits) / 10 ** digits : scaled;
      return "$" + shown.toFixed(digits) + suffix;
    }
  }
  return "$" + String(atLeast ? Math.floor(number) : Math.round(number));
}

/** A funding rate in percent, as the exchange gives it: "+0.2100 %", "−0.0375 %". */
export function ratePct(value) {
  const number = known(value);
  if (number === null) return "?";
  return (number >= 0 ? "+" : MINUS) + Math.abs(number).toFixed(4) + " %";
}

/** "3 h 12 min", "12 min", "45 s": a time still to come, rounded down. */
export function countdown(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return seconds + " s";
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return minutes + " min";
  const hours = Math.floor(minutes / 60);
  return hours + " h" + (minutes % 60 ? " " + (minutes % 60) + " min" : "");
}

/** "next funding in 3 h 12 min", counted from `now`; "funding time passed" after it. */
export function nextFunding(alert, now) {
  const next = Number(alert.next_funding_ms);
  if (!Number.isFinite(next)) return "next funding unknown";
  return next > now ? "next funding in " + countdown(next - now) : "funding time passed";
}

/** The window's volume over the baseline's mean per window, or null. */
export function volumeRatio(alert) {
  const volume = known(alert.volume_usdt);
  const baseline = known(alert.baseline_volume_usdt);
  return volume !== null && baseline !== null && baseline > 0 ? volume / baseline : null;
}

export const LIQUIDATION_CAVEAT = "At least: the exchange reports at most one liquidation "
  + "per symbol per second, so the sum may be larger";

/** What a row shows of an alert, by kind: the word beside the arrow, the main figure, the
 * note under it and a tooltip. Price alerts read as they always have. */
export function figures(alert, now) {
  const up = alert.direction === "up";
  switch (kindOf(alert)) {
    case "liquidation": {
      const count = Number(alert.liquidations);
      const orders = Number.isInteger(count)
        ? count + (count === 1 ? " order" : " orders") : "";
      const who = LIQUIDATED[alert.direction];
      return { word: who, main: "≥ " + usd(alert.notional_usdt, true),
        note: who + " liquidated" + (orders ? " · " + orders : ""),
        title: LIQUIDATION_CAVEAT };
    }
    case "funding":
      return { word: PAYS[alert.direction], main: ratePct(alert.funding_rate_pct),
        note: nextFunding(alert, now),
        title: known(alert.next_funding_ms) !== null
          ? "Funding rate; the next funding is at " + localDateTime(alert.next_funding_ms)
          : "Funding rate" };
    case "volume": {
      const ratio = volumeRatio(alert);
      return { word: up ? "up" : "down", main: usd(alert.volume_usdt),
        note: ratio === null ? "none in its baseline"
          : ratio.toFixed(1) + "× its mean (" + usd(alert.baseline_volume_usdt) + ")"
            + (Number.isInteger(alert.baseline_s) ? " over " + duration(alert.baseline_s) : ""),
        title: "Quote volume within the window, against its mean per window over the "
          + "rule's baseline" };
    }
    default:
      return { word: up ? "up" : "down", main: signedPct(alert.change_pct), note: "",
        title: "" };
  }
}
