// Optional desktop notifications. Permission is asked for only when the viewer flips the
// switch (browsers ignore or penalise a request made without a user action), and a
// notification is shown only while the page is not in front of the viewer.

import { figures, formatPrice, kindOf } from "./format.js";
import { load, save } from "./store.js";

export class Notifier {
  constructor(button, note) {
    this.button = button;
    this.note = note;
    this.supported = "Notification" in window && window.isSecureContext;
    this.enabled = this.supported && load("notifications", false) === true
      && Notification.permission === "granted";
    button.addEventListener("click", () => this.toggle());
    this.render("");
  }

  render(message) {
    this.button.setAttribute("aria-checked", String(this.enabled));
    let text = message;
    if (!text && !this.supported) text = "not available in this browser or on plain http";
    else if (!text && this.supported && Notification.permission === "denied") {
      text = "blocked in the browser's site settings";
    }
    this.note.textContent = text;
    this.note.hidden = text === "";
  }

  async toggle() {
    if (this.enabled) {
      this.set(false);
      return;
    }
    if (!this.supported) {
      this.render("");
      return;
    }
    let permission = Notification.permission;
    if (permission === "default") {
      try {
        permission = await Notification.requestPermission();
      } catch {
        permission = "denied";
      }
    }
    this.set(permission === "granted");
  }

  set(enabled) {
    this.enabled = enabled;
    save("notifications", enabled);
    this.render("");
  }

  notify(alert, chartUrl) {
    if (!this.enabled || Notification.permission !== "granted") return;
    if (document.visibilityState === "visible" && document.hasFocus()) return;
    const arrow = alert.direction === "up" ? "▲" : "▼";
    const kind = kindOf(alert);
    const shown = figures(alert, Date.now());
    try {
      const notification = new Notification(
        alert.symbol + " " + arrow + " " + (kind === "price" ? shown.main
          : kind + " " + shown.main),
        {
          body: kind === "price" ? formatPrice(alert.base_price) + " → "
            + formatPrice(alert.price) + " within " + alert.window_s + " s" : shown.note,
          tag: alert.id,
          silent: true, // the page plays its own chime
        },
      );
      notification.addEventListener("click", () => {
        window.open(chartUrl, "_blank", "noopener");
        notification.close();
      });
    } catch (error) {
      // Some platforms only allow notifications from a service worker.
      console.warn("desktop notification failed", error);
    }
  }
}
