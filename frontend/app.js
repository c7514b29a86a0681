// The live alert page: wires the connection, the table, the filters, sound and notifications.
//
// Every alert is shown once: ids are deduplicated everywhere, and after a dropped connection
// the page asks the gateway for what it missed (/ws?since=<last id seen>). History, resumed
// or not, is silent; a live alert chimes unless muted, its symbol is muted, or a filter
// hides it. Settings live in localStorage.

import { AlertList, isAlert } from "./alert-list.js";
import { ChartPanel } from "./chart-panel.js";
import { Connection } from "./connection.js";
import { KINDS, describeRules, spokenAlert } from "./format.js";
import { HealthView } from "./health.js";
import { Notifier } from "./notify.js";
import { Chime } from "./sound.js";
import { load, save } from "./store.js";

const $ = (id) => document.getElementById(id);
const table = $("alerts");
const config = table.dataset;
const CHART_URL = config.chartUrl;
const ANNOUNCE_DELAY_MS = 400;
const MAX_ROW_CHOICES = [50, 100, 200, 500];

function chartUrl(symbol) {
  return CHART_URL.replace("{SYMBOL}", encodeURIComponent(symbol));
}

function positiveNumber(value, fallback) {
  const number = Number(value);
  return Number.isFinite(number) && number > 0 ? number : fallback;
}

// -- announcements (aria-live) -------------------------------------------------------------

const announcer = $("announcer");
let spoken = [];
let announceTimer = null;

function announce(sentence) {
  spoken.push(sentence);
  if (announceTimer !== null) return;
  // Sentences of one burst are read as one announcement, not a queue of dozens.
  announceTimer = setTimeout(() => {
    announceTimer = null;
    const batch = spoken;
    spoken = [];
    announcer.textContent = batch.length <= 3 ? batch.join(". ")
      : batch.length + " new alerts, latest " + batch[batch.length - 1];
  }, ANNOUNCE_DELAY_MS);
}

// -- sound ----------------------------------------------------------------------------------

const soundToggle = $("sound-toggle");
const audioHint = $("audio-hint");

function renderSound(chime) {
  soundToggle.setAttribute("aria-checked", String(!chime.muted));
  soundToggle.title = chime.muted ? "Sound is off: click to turn it on"
    : "Sound is on: click to mute";
  if (chime.blocked) {
    audioHint.hidden = false;
  } else if (pointerIsDown) {
    // Sound unlocks on the pointerdown of a first click: removing the hint at once would
    // move the list up under the pointer, and the click (pointerup elsewhere) would miss
    // the row it was aimed at. It goes once that click is over.
    hideAfterThisClick(audioHint);
  } else {
    audioHint.hidden = true;
  }
}

// Registered before the Chime's own unlock listener, so that it is known during the unlock.
let pointerIsDown = false;
document.addEventListener("pointerdown", () => { pointerIsDown = true; }, true);
for (const type of ["pointerup", "pointercancel"]) {
  document.addEventListener(type, () => { pointerIsDown = false; }, true);
}

function hideAfterThisClick(element) {
  let done = false;
  const hide = () => {
    if (done) return;
    done = true;
    document.removeEventListener("click", hide, true);
    setTimeout(() => { element.hidden = true; }, 0);
  };
  document.addEventListener("click", hide, true);
  setTimeout(hide, 1000);  // a press that never became a click (a drag, a key)
}

const chime = new Chime(renderSound);
renderSound(chime);
soundToggle.addEventListener("click", () => chime.setMuted(!chime.muted));
$("audio-enable").addEventListener("click", () => chime.unlock());
$("sound-test").addEventListener("click", () => chime.playTest());

const notifier = new Notifier($("notify-toggle"), $("notify-note"));

// -- the list, its filters and muted symbols ----------------------------------------------

const mutedList = $("muted-list");
const mutedBox = $("muted-symbols");
let mutedSymbols = (load("mutedSymbols", []) || []).filter((s) => typeof s === "string");

const OLDER_PAGE = 50;
const olderButton = $("load-older");
const olderNote = $("older-note");
// The gateway's last word on what is older than one row: {id, note} of the oldest row when
// it said "nothing older" or "no longer held". It holds while that row is the oldest; a
// lower Keep trims rows, and then there is something older to load again.
let olderEnd = null;

const defaultMaxRows = positiveNumber(config.maxRows, 200);
let maxRows = positiveNumber(load("maxRows", defaultMaxRows), defaultMaxRows);

const list = new AlertList({
  tbody: $("alert-rows"),
  empty: $("empty"),
  summary: $("summary"),
  chartUrl,
  maxRows,
  onMuteSymbol: (symbol) => setMutedSymbols([...mutedSymbols, symbol]),
  onChange: () => updateOlderButton(),
  onOpenChart: (alert, trigger) => chartPanel.open(alert, trigger),
});

// -- the chart panel ------------------------------------------------------------------------

const alertRows = $("alert-rows");
const chartPanel = new ChartPanel({
  panel: $("chart-panel"),
  embedUrl: config.embedUrl,
  chartUrl,
  onSelect: (id) => {
    for (const row of alertRows.querySelectorAll("tr.selected")) row.classList.remove("selected");
    const row = id && alertRows.querySelector('tr[data-id="' + CSS.escape(id) + '"]');
    if (row) row.classList.add("selected");
  },
});

function setMutedSymbols(symbols) {
  mutedSymbols = [...new Set(symbols)].sort();
  save("mutedSymbols", mutedSymbols);
  list.setMutedSymbols(mutedSymbols);
  renderMutedSymbols();
  renderActiveFilters();
}

function renderMutedSymbols() {
  mutedList.replaceChildren(...mutedSymbols.map((symbol) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.textContent = symbol;
    const cross = document.createElement("span");
    cross.setAttribute("aria-hidden", "true");
    cross.textContent = " ×";
    button.append(cross);
    button.setAttribute("aria-label", "Unmute " + symbol);
    button.title = "Unmute " + symbol;
    button.addEventListener("click", () => {
      setMutedSymbols(mutedSymbols.filter((s) => s !== symbol));
      $("filter-symbol").focus();
    });
    item.append(button);
    return item;
  }));
  mutedBox.hidden = mutedSymbols.length === 0;
}

const kindInput = $("filter-kind");
const directionInput = $("filter-direction");
const minChangeInput = $("filter-min-change");
const symbolInput = $("filter-symbol");
const maxRowsInput = $("max-rows");

function readFilters() {
  return {
    kind: kindInput.value,
    direction: directionInput.value,
    minChange: minChangeInput.value === "" ? 0 : Number(minChangeInput.value),
    symbol: symbolInput.value,
  };
}

function restoreControls() {
  const saved = load("filters", {}) || {};
  kindInput.value = KINDS.includes(saved.kind) ? saved.kind : "all";
  directionInput.value = ["up", "down"].includes(saved.direction) ? saved.direction : "all";
  minChangeInput.value = Number(saved.minChange) > 0 ? String(saved.minChange) : "";
  symbolInput.value = typeof saved.symbol === "string" ? saved.symbol : "";
  if (!MAX_ROW_CHOICES.includes(maxRows)) {
    const option = document.createElement("option");
    option.value = String(maxRows);
    option.textContent = String(maxRows);
    maxRowsInput.append(option);
  }
  maxRowsInput.value = String(maxRows);
}

function filtersChanged() {
  const filters = readFilters();
  save("filters", filters);
  list.setFilters(filters);
  renderActiveFilters();
}

// On a phone the controls fold away behind one button that says how many filters are on.
const controlsToggle = $("controls-toggle");
const controls = $("controls");
controlsToggle.addEventListener("click", () => {
  const open = !controls.classList.contains("open");
  controls.classList.toggle("open", open);
  controlsToggle.setAttribute("aria-expanded", String(open));
});

function renderActiveFilters() {
  const filters = readFilters();
  const active = (filters.kind !== "all") + (filters.direction !== "all")
    + (filters.minChange > 0)
    + (filters.symbol.trim() !== "") + (mutedSymbols.length > 0);
  $("active-filters").textContent = active ? "(" + active + " active)" : "";
}

restoreControls();
list.setFilters(readFilters());
list.setMutedSymbols(mutedSymbols);
renderMutedSymbols();
renderActiveFilters();
for (const input of [kindInput, directionInput, minChangeInput, symbolInput]) {
  input.addEventListener("input", filtersChanged);
}
maxRowsInput.addEventListener("change", () => {
  maxRows = positiveNumber(maxRowsInput.value, defaultMaxRows);
  save("maxRows", maxRows);
  list.setMaxRows(maxRows);
});

// -- older alerts (GET /api/alerts?before=<id>) -------------------------------------------

function updateOlderButton() {
  const ended = olderEnd !== null && olderEnd.id === list.oldestId();
  olderButton.hidden = ended || list.size === 0 || list.size >= maxRows;
  olderNote.textContent = ended ? olderEnd.note : "";
  olderNote.hidden = !ended;
}

function olderDone(note) {
  olderEnd = { id: list.oldestId(), note };
}

olderButton.addEventListener("click", async () => {
  const before = list.oldestId();
  if (!before) return;
  const limit = Math.max(1, Math.min(OLDER_PAGE, maxRows - list.size));
  olderButton.disabled = true;
  try {
    const response = await fetch("/api/alerts?limit=" + limit + "&before="
      + encodeURIComponent(before), { headers: { Accept: "application/json" } });
    if (response.status === 404) {
      olderDone("Older alerts are no longer held by the gateway.");
    } else if (response.ok) {
      const page = await response.json();
      const older = Array.isArray(page.alerts) ? page.alerts.filter(isAlert) : [];
      // Asked for: rows trimmed by a lower Keep come back. On screen at once, so that the
      // oldest row is the one the gateway's answer is about.
      list.add(older, { highlight: false, restore: true });
      list.flush();
      if (!page.next) olderDone("That is all the gateway holds.");
    }
  } catch (error) {
    console.warn("could not load older alerts", error);
  } finally {
    olderButton.disabled = false;
    updateOlderButton();
  }
});

// -- rules ------------------------------------------------------------------------------------

const ruleText = $("rule-text");
const ruleLabel = $("rule-label");

function showRules(rules) {
  ruleText.textContent = describeRules(rules);
  ruleLabel.textContent = rules.length > 1 ? "Rules" : "Rule";
}

fetch("/api/rules", { headers: { Accept: "application/json" } })
  .then((response) => (response.ok ? response.json() : null))
  .then((document_) => {
    if (document_ && Array.isArray(document_.rules)) showRules(document_.rules);
  })
  .catch(() => {}); // the WebSocket sends the rules too

// -- unread count in the title while the tab is in the background -------------------------

const baseTitle = document.title;
let unread = 0;
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    unread = 0;
    document.title = baseTitle;
  }
});

// -- messages -------------------------------------------------------------------------------

let lastId = null;
let firstHistory = true;

function onHistory(message) {
  const alerts = Array.isArray(message.alerts) ? message.alerts.filter(isAlert) : [];
  if (alerts.length) lastId = alerts[alerts.length - 1].id;
  // On a reconnect, what the viewer has not seen yet stands out, silently.
  const fresh = list.add(alerts, { highlight: !firstHistory });
  if (!firstHistory && fresh.length) {
    const visible = fresh.filter((a) => list.passes(a)).length;
    if (visible) {
      announce(visible === 1 ? "1 alert arrived while disconnected"
        : visible + " alerts arrived while disconnected");
    }
  }
  firstHistory = false;
}

function onAlert(alert) {
  if (!isAlert(alert)) return;
  lastId = alert.id;
  if (list.add([alert], { highlight: true }).length === 0) return;
  if (!list.passes(alert)) return; // filtered out or muted symbol: no sound, no notice
  chime.playChime(alert.direction);
  notifier.notify(alert, chartUrl(alert.symbol));
  announce(spokenAlert(alert));
  if (document.visibilityState === "hidden") {
    unread += 1;
    document.title = "(" + unread + ") " + baseTitle;
  }
}

function onMessage(message) {
  switch (message.type) {
    case "history": onHistory(message); break;
    case "alert": onAlert(message.alert); break;
    // Several alerts that reached the gateway together, oldest first.
    case "alerts": if (Array.isArray(message.alerts)) message.alerts.forEach(onAlert); break;
    case "rules": if (Array.isArray(message.rules)) showRules(message.rules); break;
    case "health": health.show(message.health); break;
    default: break; // "ping" and types a later gateway may add
  }
}

const status = $("status");
const statusText = $("status-text");
const statusDetail = $("status-detail");
const STATUS_TEXT = { connecting: "connecting…", live: "live", down: "offline" };
const health = new HealthView($("health"));

function onStatus(state, detail) {
  health.connection(state);
  status.className = "status status-" + state;
  statusText.textContent = STATUS_TEXT[state] || state;
  statusDetail.textContent = detail ? "· " + detail : "";
}

new Connection({
  onMessage,
  onStatus,
  lastId: () => lastId,
  deadAfterMs: positiveNumber(config.deadAfterMs, 40000),
  retryMinMs: positiveNumber(config.retryMinMs, 500),
  retryMaxMs: positiveNumber(config.retryMaxMs, 30000),
}).connect();
