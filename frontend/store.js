// Viewer preferences in localStorage. A browser that refuses storage (private mode, policy)
// still gets a working page: reads fall back to defaults and writes are dropped.

const PREFIX = "alerter.";

export function load(key, fallback) {
  try {
    const raw = window.localStorage.getItem(PREFIX + key);
    return raw === null ? fallback : JSON.parse(raw);
  } catch {
    return fallback;
  }
}

export function save(key, value) {
  try {
    window.localStorage.setItem(PREFIX + key, JSON.stringify(value));
  } catch {
    // Storage full or disabled: the preference lasts for this page only.
  }
}
