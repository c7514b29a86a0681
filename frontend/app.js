// Live alert list: connects to the gateway's /ws, shows the history, then each new alert on top.
//
// Protocol (server to client, JSON text):
//   {"type": "history", "alerts": [alert, ...]}   once per connection, oldest first
//   {"type": "alert", "alert": alert}              per live alert
// Every piece of text from the server goes into the page through textContent, never as HTML.
"use strict";

(() => {
  const table = document.getElementById("alerts");
  const rows = document.getElementById("alert-rows");
  const empty = document.getElementById("empty");
  const status = document.getElementById("status");
  const statusText = document.getElementById("status-text");

  const CHART_URL = table.dataset.chartUrl;
  const MAX_ROWS = Number(table.dataset.maxRows) || 200;
  const RETRY_MIN_MS = 500;
  const RETRY_MAX_MS = 30000;

  // id -> <tr>, for the alerts on screen: the same alert (history after a reconnect, or a
  // redelivery) must never appear twice.
  const shown = new Map();
  let attempts = 0;

  const timeFormat = new Intl.DateTimeFormat(undefined, {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });
  const dateTimeFormat = new Intl.DateTimeFormat(undefined, {
    dateStyle: "medium", timeStyle: "medium",
  });

  function chartUrl(symbol) {
    return CHART_URL.replace("{SYMBOL}", encodeURIComponent(symbol));
  }

  function signedPct(value) {
    return (value > 0 ? "+" : "") + value.toFixed(2) + " %";
  }

  // Ten significant digits hide float noise (103.33000000000001) and keep every real tick.
  function formatPrice(value) {
    return String(Number(Number(value).toPrecision(10)));
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  // The one place that turns an alert into markup; a fuller screen grows from here.
  function renderRow(alert) {
    const tr = document.createElement("tr");
    tr.dataset.id = alert.id;
    tr.dataset.eventTime = String(alert.event_time_ms);
    const up = alert.direction === "up";

    const when = new Date(alert.event_time_ms);
    const time = cell(timeFormat.format(when));
    time.title = dateTimeFormat.format(when);
    tr.append(time);

    const symbolCell = document.createElement("td");
    const link = document.createElement("a");
    link.href = chartUrl(alert.symbol);
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = alert.symbol;
    link.title = "Open " + alert.symbol + " on TradingView";
    symbolCell.append(link);
    tr.append(symbolCell);

    // Arrow and word as well as colour: the direction must not depend on seeing red/green.
    tr.append(cell((up ? "▲ up" : "▼ down"), up ? "up" : "down"));
    tr.append(cell(signedPct(alert.change_pct), "num " + (up ? "up" : "down")));
    tr.append(cell(formatPrice(alert.price), "num"));
    tr.append(cell(formatPrice(alert.base_price), "num"));
    tr.append(cell(alert.window_s + " s", "num"));
    return tr;
  }

  // Newest event first. Live alerts land on top; history after a reconnect slots in place.
  function insert(alert, fresh) {
    if (!alert || typeof alert.id !== "string" || shown.has(alert.id)) return;
    const tr = renderRow(alert);
    if (fresh) tr.classList.add("fresh");
    let before = rows.firstElementChild;
    while (before && Number(before.dataset.eventTime) > alert.event_time_ms) {
      before = before.nextElementSibling;
    }
    rows.insertBefore(tr, before);
    shown.set(alert.id, tr);
    while (rows.childElementCount > MAX_ROWS) {
      const last = rows.lastElementChild;
      shown.delete(last.dataset.id);
      last.remove();
    }
    empty.hidden = rows.childElementCount > 0;
  }

  function setStatus(state, text) {
    status.className = "status status-" + state;
    statusText.textContent = text;
  }

  function handle(message) {
    if (message.type === "history" && Array.isArray(message.alerts)) {
      attempts = 0;
      setStatus("live", "live");
      for (const alert of message.alerts) insert(alert, false);
    } else if (message.type === "alert") {
      insert(message.alert, true);
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const socket = new WebSocket(scheme + "//" + location.host + "/ws");
    setStatus("connecting", "connecting…");

    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch (error) {
        console.warn("ignoring a message that is not JSON", error);
        return;
      }
      handle(message);
    });

    socket.addEventListener("close", (event) => {
      const ceiling = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** attempts);
      const delay = ceiling / 2 + Math.random() * (ceiling / 2);
      attempts += 1;
      const why = event.reason ? " (" + event.reason + ")" : "";
      setStatus("down", "disconnected" + why + ", retrying in " + Math.ceil(delay / 1000) + " s");
      setTimeout(connect, delay);
    });
  }

  connect();
})();
