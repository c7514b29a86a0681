// The chart panel: TradingView's advanced chart of one symbol (15-minute candles) beside the
// list, opened by a click on an alert.
//
// The chart is TradingView's widget page in an iframe, so no third-party script runs in this
// page and its CSP only has to allow that one frame origin. TradingView may be unreachable
// (an offline desk, a firewall): the iframe then shows the browser's error page, the list
// keeps working, and the panel's plain link to the chart is always there. The panel is not
// modal: the list stays usable, Esc or the close button hides it and gives focus back.

const PANEL_INTERVAL = "15";

export class ChartPanel {
  /**
   * @param {object} options
   * @param {HTMLElement} options.panel the <aside> (hidden until a chart is asked for)
   * @param {string} options.embedUrl TradingView's widget page, e.g. .../widgetembed/
   * @param {(symbol: string) => string} options.chartUrl the full chart, for the link
   * @param {(id: string|null) => void} options.onSelect the alert shown (null: closed)
   */
  constructor({ panel, embedUrl, chartUrl, onSelect }) {
    this.panel = panel;
    this.embedUrl = embedUrl;
    this.chartUrl = chartUrl;
    this.onSelect = onSelect;
    this.title = panel.querySelector(".chart-title");
    this.link = panel.querySelector(".chart-link");
    this.frameBox = panel.querySelector(".chart-frame");
    this.symbol = null;
    this.returnFocus = null;
    panel.querySelector(".chart-close").addEventListener("click", () => this.close());
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && this.symbol !== null && !event.defaultPrevented) {
        this.close();
      }
    });
  }

  get isOpen() {
    return this.symbol !== null;
  }

  /** The widget page for one symbol: BINANCE:<SYMBOL>.P, the perpetual, 15-minute candles. */
  frameUrl(symbol) {
    const dark = window.matchMedia("(prefers-color-scheme: dark)").matches;
    const params = new URLSearchParams({
      symbol: "BINANCE:" + symbol + ".P",
      interval: PANEL_INTERVAL,
      theme: dark ? "dark" : "light",
      style: "1",
      timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "Etc/UTC",
      locale: "en",
      withdateranges: "1",
      hideideas: "1",
      saveimage: "0",
    });
    return this.embedUrl + "?" + params.toString();
  }

  open(alert, trigger) {
    this.returnFocus = trigger || null;
    this.onSelect(alert.id);
    if (this.symbol !== alert.symbol) {
      this.symbol = alert.symbol;
      this.title.textContent = alert.symbol;
      this.link.href = this.chartUrl(alert.symbol);
      this.link.setAttribute("aria-label", "Open " + alert.symbol + " on TradingView (new tab)");
      const frame = document.createElement("iframe");
      frame.title = "TradingView chart of " + alert.symbol + ", 15-minute candles";
      frame.src = this.frameUrl(alert.symbol);
      frame.referrerPolicy = "origin";
      frame.allow = "fullscreen";
      this.frameBox.replaceChildren(frame);
    }
    // Below the header, which stays in view: the connection and pipeline status with it.
    const header = document.querySelector("header");
    this.panel.style.top = header && window.innerWidth > 820 ? header.offsetHeight + "px" : "";
    this.panel.hidden = false;
    document.body.classList.add("chart-open");
  }

  close() {
    if (this.symbol === null) return;
    this.symbol = null;
    this.panel.hidden = true;
    this.frameBox.replaceChildren(); // stops the widget and its connections
    document.body.classList.remove("chart-open");
    this.onSelect(null);
    const focus = this.returnFocus;
    this.returnFocus = null;
    if (focus && focus.isConnected) focus.focus();
  }
}
