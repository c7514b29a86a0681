// The chime: two short sine notes made with WebAudio (rising for up, falling for down), no
// audio file. Browsers hold an AudioContext suspended until the viewer interacts with the
// page; until then the page shows a hint, and the first click or key press resumes it.

import { load, save } from "./store.js";

const NOTES = { up: [880, 1318.5], down: [880, 659.25] };
const NOTE_GAP_S = 0.09;
const NOTE_LENGTH_S = 0.22;
const PEAK_GAIN = 0.12;
// A burst of alerts gives one chime, not a machine-gun rattle.
const MIN_INTERVAL_MS = 250;

export class Chime {
  constructor(onStateChange) {
    this.muted = load("muted", false) === true;
    this.context = null;
    this.lastChimeAt = 0;
    this.onStateChange = onStateChange;
    const unlock = () => this.unlock();
    for (const type of ["pointerdown", "keydown", "touchend"]) {
      document.addEventListener(type, unlock, { capture: true, passive: true });
    }
    if (!this.muted) this.ensureContext();
  }

  /** "running", "suspended", "closed" or "unavailable" (no WebAudio at all). */
  get state() {
    return this.context ? this.context.state : "unavailable";
  }

  /** True while sound is wanted but the browser is holding it back. */
  get blocked() {
    return !this.muted && window.AudioContext !== undefined && this.state !== "running";
  }

  ensureContext() {
    if (this.context || window.AudioContext === undefined) return this.context;
    try {
      this.context = new window.AudioContext();
    } catch (error) {
      console.warn("no audio output available", error);
      return null;
    }
    this.context.addEventListener("statechange", () => this.onStateChange(this));
    this.onStateChange(this);
    return this.context;
  }

  /** Called on every user gesture: the moment a browser lets a page start audio. */
  unlock() {
    if (this.muted) return;
    const context = this.ensureContext();
    if (context && context.state === "suspended") {
      context.resume().catch(() => {}).finally(() => this.onStateChange(this));
    }
  }

  setMuted(muted) {
    this.muted = muted;
    save("muted", muted);
    if (!muted) this.ensureContext();
    this.onStateChange(this);
  }

  /**
   * Play the chime for one alert's direction. Returns whether a sound was started; a muted
   * page, a context the browser still holds back, or a chime a moment ago play nothing.
   */
  playChime(direction) {
    if (this.muted) return false;
    const context = this.ensureContext();
    if (!context || context.state !== "running") return false;
    const now = performance.now();
    if (now - this.lastChimeAt < MIN_INTERVAL_MS) return false;
    this.lastChimeAt = now;
    const notes = NOTES[direction] || NOTES.up;
    const start = context.currentTime + 0.01;
    notes.forEach((frequency, index) => {
      this.note(context, frequency, start + index * NOTE_GAP_S);
    });
    return true;
  }

  /**
   * The test button: both chimes, up then down, even while muted (the viewer asked for it,
   * to check the speakers). The click is a user gesture, so a held-back context may start.
   */
  async playTest() {
    const context = this.ensureContext();
    if (!context) return false;
    if (context.state === "suspended") {
      try {
        await context.resume();
      } catch (error) {
        console.warn("the browser would not start audio", error);
      }
    }
    this.onStateChange(this);
    if (context.state !== "running") return false;
    const start = context.currentTime + 0.01;
    [...NOTES.up, ...NOTES.down].forEach((frequency, index) => {
      this.note(context, frequency, start + index * NOTE_GAP_S + (index >= 2 ? 0.25 : 0));
    });
    return true;
  }

  note(context, frequency, at) {
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.type = "sine";
    oscillator.frequency.setValueAtTime(frequency, at);
    gain.gain.setValueAtTime(0.0001, at);
    gain.gain.exponentialRampToValueAtTime(PEAK_GAIN, at + 0.012);
    gain.gain.exponentialRampToValueAtTime(0.0001, at + NOTE_LENGTH_S);
    oscillator.connect(gain);
    gain.connect(context.destination);
    oscillator.start(at);
    oscillator.stop(at + NOTE_LENGTH_S + 0.02);
  }
}
