// The alert table: one row per alert id, newest event first, at most `maxRows` rows.
//
// Rows are built with DOM calls and textContent only: nothing the server sends is parsed
// as HTML. New alerts are queued and inserted once per animation frame, so a burst costs
// one layout; ages are refreshed in place every second, without rebuilding rows. A plain
// click on a row or its symbol asks for the chart panel (`onOpenChart`); a modifier- or
// middle-click on the symbol is left to the browser, which opens TradingView in a new tab.
//
// Every rule kind has its row: a badge names the kind (none for price alerts), the change
// column holds the kind's figure (the move, the liquidated sum as the lower bound it is, the
// funding rate, the window's volume) with a note under it (orders, the countdown to the next
// funding, refreshed with the ages, the ratio to the baseline); the shape is a price path,
// so only price alerts have one.

import {
  KINDS, age, figures, formatPrice, kindOf, levelBadge, localDateTime, localTime,
} from "./format.js";
import { sparkline } from "./sparkline.js";

const AGE_REFRESH_MS = 1000;
// Ids remembered after their row was trimmed, so a later history cannot bring them back.
const KNOWN_IDS_FACTOR = 5;

/** An alert the page can show: the fields it needs, of the right types. */
export function isAlert(value) {
  return Boolean(value) && typeof value === "object"
    && typeof value.id === "string" && value.id !== ""
    && typeof value.symbol === "string" && value.symbol !== ""
    && (value.direction === "up" || value.direction === "down")
    && Number.isFinite(value.change_pct) && Number.isFinite(value.event_time_ms);
}

export class AlertList {
  constructor({ tbody, empty, summary, chartUrl, maxRows, onMuteSymbol, onChange,
    onOpenChart }) {
    this.tbody = tbody;
    this.empty = empty;
    this.summary = summary;
    this.chartUrl = chartUrl;
    this.maxRows = maxRows;
    this.onMuteSymbol = onMuteSymbol;
    this.onChange = onChange;
    this.onOpenChart = onOpenChart;
    this.rows = new Map(); // id -> {alert, tr, ageCell}
    this.known = new Set(); // every id shown or queued (bounded, oldest forgotten first)
    this.pending = [];
    this.scheduled = false;
    this.filters = { direction: "all", minChange: 0, symbol: "", kind: "all" };
    this.mutedSymbols = new Set();
    setInterval(() => this.refreshAges(), AGE_REFRESH_MS);
  }

  knows(id) {
    return this.known.has(id);
  }

  get size() {
    return this.rows.size;
  }

  /** The id of the oldest alert on screen (the last row), or null. */
  oldestId() {
    const last = this.tbody.lastElementChild;
    return last ? last.dataset.id : null;
  }

  /**
   * Queue alerts for display; ids already known are ignored. Returns the new ones.
   *
   * With `restore` (older alerts the viewer asked for), only ids on screen or queued are
   * ignored: a row trimmed by the cap comes back, which a history never brings.
   */
  add(alerts, { highlight, restore = false }) {
    const queued = new Set(restore ? this.pending.map((p) => p.alert.id) : []);
    const fresh = [];
    for (const alert of alerts) {
      if (!isAlert(alert)) continue;
      const seen = restore ? this.rows.has(alert.id) || queued.has(alert.id)
        : this.known.has(alert.id);
      if (seen) continue;
      queued.add(alert.id);
      this.remember(alert.id);
      this.pending.push({ alert, highlight });
      fresh.push(alert);
    }
    if (fresh.length) this.schedule();
    return fresh;
  }

  remember(id) {
    this.known.delete(id); // a restored id is remembered afresh, as the newest
    this.known.add(id);
    const limit = Math.max(1000, this.maxRows * KNOWN_IDS_FACTOR);
    if (this.known.size > limit) {
      for (const old of this.known) {
        if (this.known.size <= limit || this.rows.has(old)) break;
        this.known.delete(old);
      }
    }
  }

  /** Whether an alert passes the filters and is not of a muted symbol. The minimum change
   * is a price move's: another kind's change is not what fired it. */
  passes(alert) {
    const { direction, minChange, symbol, kind } = this.filters;
    const own = kindOf(alert);
    if (kind !== "all" && own !== kind) return false;
    if (direction !== "all" && alert.direction !== direction) return false;
    if (minChange > 0 && own === "price" && Math.abs(alert.change_pct) < minChange) {
      return false;
    }
    if (symbol && !alert.symbol.toUpperCase().includes(symbol)) return false;
    return !this.mutedSymbols.has(alert.symbol);
  }

  setFilters(filters) {
    this.filters = {
      direction: ["up", "down"].includes(filters.direction) ? filters.direction : "all",
      minChange: Math.max(0, Number(filters.minChange) || 0),
      symbol: String(filters.symbol || "").trim().toUpperCase(),
      kind: KINDS.includes(filters.kind) ? filters.kind : "all",
    };
    this.applyFilters();
  }

  setMutedSymbols(symbols) {
    this.mutedSymbols = new Set(symbols);
    this.applyFilters();
  }

  setMaxRows(maxRows) {
    this.maxRows = maxRows;
    this.trim();
    this.updateSummary();
  }

  applyFilters() {
    const now = Date.now();
    for (const row of this.rows.values()) {
      row.tr.hidden = !this.passes(row.alert);
      if (!row.tr.hidden) this.refreshRow(row, now);
    }
    this.updateSummary();
  }

  // -- rendering --------------------------------------------------------------------------

  schedule() {
    if (this.scheduled) return;
    this.scheduled = true;
    // Animation frames pause in a background tab; the timeout keeps the list current there.
    const flush = () => this.flush();
    requestAnimationFrame(flush);
    setTimeout(flush, 250);
  }

  flush() {
    if (!this.scheduled) return;
    this.scheduled = false;
    const batch = this.pending;
    this.pending = [];
    const now = Date.now();
    for (const { alert, highlight } of batch) this.insert(alert, highlight, now);
    this.trim();
    this.updateSummary();
  }

  insert(alert, highlight, now) {
    const row = this.render(alert, now);
    if (highlight) row.tr.classList.add("fresh");
    row.tr.hidden = !this.passes(alert);
    let before = this.tbody.firstElementChild;
    while (before && Number(before.dataset.eventTime) > alert.event_time_ms) {
      before = before.nextElementSibling;
    }
    this.tbody.insertBefore(row.tr, before);
    this.rows.set(alert.id, row);
  }

  trim() {
    while (this.tbody.childElementCount > this.maxRows) {
      const last = this.tbody.lastElementChild;
      this.rows.delete(last.dataset.id);
      last.remove();
    }
  }

  updateSummary() {
    const total = this.rows.size;
    let visible = 0;
    for (const row of this.rows.values()) if (!row.tr.hidden) visible += 1;
    this.empty.hidden = visible > 0;
    this.empty.textContent = total === 0
      ? "No alerts yet. New ones appear here as they happen."
      : "No alerts match the filters.";
    const noun = total === 1 ? "alert" : "alerts";
    this.summary.textContent = total === 0 ? ""
      : visible === total ? total + " " + noun
        : "Showing " + visible + " of " + total + " " + noun;
    this.onChange();
  }

  refreshAges() {
    if (document.hidden) return;
    const now = Date.now();
    for (const row of this.rows.values()) {
      if (!row.tr.hidden) this.refreshRow(row, now);
    }
  }

  /** The texts of a row that change with time: its age, a funding alert's countdown. */
  refreshRow(row, now) {
    const text = age(row.alert.event_time_ms, now);
    if (row.ageCell.textContent !== text) row.ageCell.textContent = text;
    if (row.noteCell && kindOf(row.alert) === "funding") {
      const note = figures(row.alert, now).note;
      if (row.noteCell.textContent !== note) row.noteCell.textContent = note;
    }
  }

  render(alert, now) {
    const up = alert.direction === "up";
    const tone = up ? "up" : "down";
    const kind = kindOf(alert);
    const shown = figures(alert, now);
    const tr = document.createElement("tr");
    tr.dataset.id = alert.id;
    tr.dataset.kind = kind;
    tr.dataset.symbol = alert.symbol;
    tr.dataset.direction = alert.direction;
    tr.dataset.eventTime = String(alert.event_time_ms);

    const timeCell = cell("col-time");
    const time = document.createElement("time");
    const when = new Date(alert.event_time_ms);
    time.dateTime = when.toISOString();
    time.textContent = localTime(alert.event_time_ms);
    time.title = localDateTime(alert.event_time_ms) + " (exchange event time)";
    timeCell.append(time);

    const symbolCell = cell("col-symbol");
    const link = document.createElement("a");
    link.href = this.chartUrl(alert.symbol);
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = alert.symbol;
    link.className = "symbol-link";
    link.title = "Show the " + alert.symbol + " chart (Ctrl/⌘-click: TradingView in a new tab)";
    link.addEventListener("click", (event) => {
      if (opensElsewhere(event)) return; // the browser's new tab, not the panel
      event.preventDefault();
      this.onOpenChart(alert, link);
    });
    symbolCell.append(link);
    if (kind !== "price") {
      const badge = document.createElement("span");
      badge.className = "kind-badge kind-" + kind;
      badge.textContent = kind;
      badge.title = "A " + kind + " rule fired";
      symbolCell.append(" ", badge);
    }

    // Arrow and word as well as colour: the direction never depends on seeing red or green.
    const moveCell = cell("col-move " + tone);
    const arrow = document.createElement("span");
    arrow.className = "arrow";
    arrow.setAttribute("aria-hidden", "true");
    arrow.textContent = up ? "▲" : "▼";
    moveCell.append(arrow, " " + shown.word);

    const changeCell = cell("num col-change " + tone);
    const figure = document.createElement("span");
    figure.className = "figure";
    figure.textContent = shown.main;
    changeCell.append(figure);
    if (shown.title) changeCell.title = shown.title;
    let noteCell = null;
    if (shown.note) {
      noteCell = document.createElement("span");
      noteCell.className = "figure-note";
      noteCell.textContent = shown.note;
    }
    // An escalation: the move kept growing by the rule's step inside its cooldown.
    const badge = levelBadge(alert.level);
    if (badge) {
      const level = document.createElement("span");
      level.className = "level";
      level.textContent = badge;
      level.title = "Escalation " + alert.level + ": the move grew past the previous alert"
        + (alert.rule ? " (rule " + alert.rule + ")" : "");
      changeCell.append(" ", level);
      tr.dataset.level = String(alert.level);
    }
    if (noteCell) changeCell.append(noteCell);

    const shapeCell = cell("col-shape " + tone);
    // The path is of prices within a price rule's window: the other kinds draw none.
    const svg = kind === "price" ? sparkline(alert) : null;
    if (svg) {
      shapeCell.append(svg);
    } else {
      const none = document.createElement("span");
      none.className = "no-shape";
      none.textContent = "–";
      none.title = kind === "price" ? "No price path in this alert"
        : "A " + kind + " alert: no price path";
      shapeCell.append(none);
    }

    const priceCell = cell("num col-price", formatPrice(alert.price));
    const baseCell = cell("num col-base", formatPrice(alert.base_price));
    const windowCell = cell("num col-window",
      Number.isFinite(alert.window_s) && alert.window_s > 0 ? alert.window_s + " s" : "–");
    if (typeof alert.rule === "string") windowCell.title = "Rule " + alert.rule;
    const ageCell = cell("num col-age", age(alert.event_time_ms, now));
    // Two rules can fire on one tick: the rule's name tells their rows apart.
    const ruleCell = cell("col-rule", typeof alert.rule === "string" && alert.rule !== ""
      ? alert.rule : "–");
    ruleCell.title = "The rule that fired";

    const actionsCell = cell("col-actions");
    const mute = document.createElement("button");
    mute.type = "button";
    mute.className = "quiet-button";
    mute.textContent = "Mute";
    mute.setAttribute("aria-label", "Mute " + alert.symbol);
    mute.title = "Hide and silence " + alert.symbol + " alerts";
    mute.addEventListener("click", () => this.onMuteSymbol(alert.symbol));
    actionsCell.append(mute);

    tr.append(timeCell, symbolCell, moveCell, changeCell, shapeCell, priceCell, baseCell,
      ruleCell, windowCell, ageCell, actionsCell);
    tr.addEventListener("click", (event) => {
      if (event.target.closest("button, a") || !window.getSelection().isCollapsed) return;
      this.onOpenChart(alert, link);
    });
    return { alert, tr, ageCell, noteCell };
  }
}

/** A click the browser should handle itself: a new tab or window, a download. */
function opensElsewhere(event) {
  return event.button !== 0 || event.ctrlKey || event.metaKey || event.shiftKey
    || event.altKey;
}

function cell(className, text) {
  const td = document.createElement("td");
  td.className = className;
  if (text !== undefined) td.textContent = text;
  return td;
}
