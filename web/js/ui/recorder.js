// Voice messages: recording from the microphone with MediaRecorder (Opus in WebM where the
// browser has it, else whatever it records), and the composer's recording bar: hold the mic
// button and let go to send (let go away from it to cancel), or click it to record hands-free
// with a cancel and a send button. Escape cancels.

import { h } from '../dom.js';
import { icon } from '../icons.js';
import { duration } from '../media.js';

/** Formats to ask for, best first. */
const TYPES = ['audio/webm;codecs=opus', 'audio/ogg;codecs=opus', 'audio/mp4;codecs=mp4a.40.2', 'audio/mp4', 'audio/webm'];
/** A recording shorter than this is a slip of the finger, not a message. */
const MIN_MS = 500;
/** Recordings stop (and are sent) at this length. */
const MAX_MS = 30 * 60_000;
/** A press on the mic button longer than this is "hold to record". */
const HOLD_MS = 350;

/** Whether this browser can record sound at all. */
export function canRecord() {
  return !!(navigator.mediaDevices && typeof navigator.mediaDevices.getUserMedia === 'function' && 'MediaRecorder' in window);
}

/** One recording from the microphone. */
export class Recording {
  /** @returns {Promise<Recording>} rejects with a sentence for the user */
  static async start() {
    /** @type {MediaStream} */
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true } });
    } catch (e) {
      const name = e instanceof DOMException ? e.name : '';
      if (name === 'NotAllowedError' || name === 'SecurityError') {
        throw new Error('Microphone access is blocked. Allow it in the browser’s site settings to record voice messages.');
      }
      if (name === 'NotFoundError' || name === 'OverconstrainedError') throw new Error('No microphone found.');
      if (name === 'NotReadableError') throw new Error('The microphone is in use by another app.');
      throw new Error('The microphone could not be started.');
    }
    const type = TYPES.find((t) => MediaRecorder.isTypeSupported(t));
    try {
      const rec = new MediaRecorder(stream, type ? { mimeType: type, audioBitsPerSecond: 32_000 } : undefined);
      return new Recording(stream, rec, type || '');
    } catch {
      for (const t of stream.getTracks()) t.stop();
      throw new Error('This browser cannot record voice messages.');
    }
  }

  /** @param {MediaStream} stream @param {MediaRecorder} rec @param {string} type */
  constructor(stream, rec, type) {
    this.stream = stream;
    this.rec = rec;
    this.type = type;
    /** @type {Blob[]} */
    this.chunks = [];
    this.startedAt = performance.now();
    this.stoppedAt = 0;
    rec.ondataavailable = (e) => {
      if (e.data.size) this.chunks.push(e.data);
    };
    this.stopped = new Promise((resolve) => {
      rec.onstop = () => resolve(undefined);
    });
    rec.onstart = () => {
      this.startedAt = performance.now();
    };
    rec.start(250);
  }

  /** Milliseconds recorded so far. */
  elapsed() {
    return (this.stoppedAt || performance.now()) - this.startedAt;
  }

  /** Ends the recording. @returns {Promise<{blob: Blob, duration_ms: number}>} */
  async finish() {
    this.stoppedAt = performance.now();
    if (this.rec.state !== 'inactive') this.rec.stop();
    await this.stopped;
    this.release();
    const type = this.rec.mimeType || this.type || this.chunks[0]?.type || 'audio/webm';
    return { blob: new Blob(this.chunks, { type }), duration_ms: Math.round(this.stoppedAt - this.startedAt) };
  }

  /** Throws the recording away. */
  cancel() {
    this.stoppedAt = performance.now();
    this.rec.ondataavailable = null;
    if (this.rec.state !== 'inactive') this.rec.stop();
    this.release();
  }

  release() {
    for (const t of this.stream.getTracks()) t.stop();
  }
}

/**
 * The composer's recording controls: the mic button (shown while there is nothing to send) and
 * the bar that replaces the text field while recording.
 */
export class RecorderBar {
  /**
   * @param {object} hooks
   * @param {(blob: Blob, durationMs: number) => void} hooks.send
   * @param {(message: string) => void} hooks.error
   * @param {(recording: boolean) => void} hooks.changed the bar was shown or hidden
   */
  constructor(hooks) {
    this.hooks = hooks;
    /** @type {Recording | null} */
    this.recording = null;
    /** Starting (waiting for the microphone). */
    this.starting = false;
    /** The press that started a hold-to-record, while held. @type {number | null} */
    this.holdPointer = null;
    this.pressedAt = 0;
    /** Where the mic button was when pressed (letting go far from it cancels). @type {DOMRect | null} */
    this.pressRect = null;
    /** @type {ReturnType<typeof setInterval> | undefined} */
    this.timer = undefined;

    this.mic = h(
      'button',
      {
        class: 'mic-btn',
        attrs: { type: 'button', 'aria-label': 'Record voice message', title: 'Record a voice message (hold, or click)', hidden: !canRecord() },
        on: {
          pointerdown: (e) => this.onPress(e),
          pointerup: (e) => this.onRelease(e),
          pointercancel: () => this.holdPointer !== null && this.cancel(),
          click: (e) => {
            // The keyboard (Enter, Space) clicks without a press: record hands-free.
            if (e.detail === 0 && !this.recording && !this.starting) void this.begin(false);
          },
          contextmenu: (e) => e.preventDefault(),
        },
      },
      icon('mic'),
    );
    this.time = h('span', { class: 'rec-time', attrs: { role: 'timer', 'aria-label': 'Recording time' } }, '0:00');
    this.hint = h('span', { class: 'rec-hint muted' });
    this.cancelButton = h(
      'button',
      { class: 'icon-btn rec-cancel', attrs: { type: 'button', 'aria-label': 'Cancel recording', title: 'Cancel (Esc)' }, on: { click: () => this.cancel() } },
      icon('trash'),
    );
    this.sendButton = h(
      'button',
      { class: 'send-btn rec-send', attrs: { type: 'button', 'aria-label': 'Send voice message', title: 'Send' }, on: { click: () => void this.stopAndSend() } },
      icon('send'),
    );
    this.bar = h(
      'div',
      { class: 'recorder', attrs: { hidden: true, role: 'group', 'aria-label': 'Recording a voice message' } },
      this.cancelButton,
      h('span', { class: 'rec-dot', attrs: { 'aria-hidden': 'true' } }),
      this.time,
      this.hint,
      this.sendButton,
    );
    this.onKey = (/** @type {KeyboardEvent} */ e) => {
      if (e.key === 'Escape' && this.recording) {
        e.preventDefault();
        this.cancel();
      }
    };
  }

  get active() {
    return !!this.recording || this.starting;
  }

  /** @param {PointerEvent} e */
  onPress(e) {
    if (e.button !== 0 || this.active) return;
    e.preventDefault();
    this.holdPointer = e.pointerId;
    this.pressedAt = performance.now();
    this.pressRect = this.mic.getBoundingClientRect();
    try {
      this.mic.setPointerCapture(e.pointerId);
    } catch {
      // Not capturable: the release may land elsewhere, and is then a cancel.
    }
    void this.begin(true);
  }

  /** @param {PointerEvent} e */
  onRelease(e) {
    if (this.holdPointer !== e.pointerId) return;
    this.holdPointer = null;
    const held = performance.now() - this.pressedAt > HOLD_MS;
    if (!held) {
      // A click: keep recording, hands-free.
      this.handsFree();
      return;
    }
    const r = this.pressRect ?? this.mic.getBoundingClientRect();
    const slack = 40;
    const inside = e.clientX > r.left - slack && e.clientX < r.right + slack && e.clientY > r.top - slack && e.clientY < r.bottom + slack;
    if (inside) void this.stopAndSend();
    else this.cancel();
  }

  /** @param {boolean} held */
  async begin(held) {
    this.starting = true;
    this.hooks.error('');
    try {
      const rec = await Recording.start();
      if (!this.starting) {
        // Cancelled while the microphone was starting.
        rec.cancel();
        return;
      }
      this.recording = rec;
    } catch (e) {
      this.hooks.error(e instanceof Error ? e.message : String(e));
      this.holdPointer = null;
      return;
    } finally {
      this.starting = false;
    }
    this.bar.hidden = false;
    this.draw();
    this.timer = setInterval(() => this.draw(), 200);
    document.addEventListener('keydown', this.onKey, true);
    this.hooks.changed(true);
    if (held && this.holdPointer !== null) {
      // Held: the mic stays under the finger, and letting go of it sends.
      this.hint.textContent = 'Release to send, move away to cancel';
      this.sendButton.hidden = true;
      this.mic.hidden = false;
      this.mic.classList.add('recording');
    } else {
      this.handsFree();
    }
  }

  /** Recording without holding: a send button takes the mic's place. */
  handsFree() {
    if (!this.recording) return;
    this.hint.textContent = '';
    this.mic.classList.remove('recording');
    this.mic.hidden = true;
    this.sendButton.hidden = false;
    this.sendButton.focus();
  }

  draw() {
    const rec = this.recording;
    if (!rec) return;
    const ms = rec.elapsed();
    this.time.textContent = duration(ms - (ms % 1000));
    if (ms >= MAX_MS) void this.stopAndSend();
  }

  async stopAndSend() {
    const rec = this.recording;
    if (!rec) return;
    this.end();
    const { blob, duration_ms } = await rec.finish();
    if (duration_ms < MIN_MS || !blob.size) {
      this.hooks.error('Too short to send: hold the button while you speak, or click it to record hands-free.');
      return;
    }
    this.hooks.send(blob, duration_ms);
  }

  cancel() {
    this.starting = false;
    this.holdPointer = null;
    const rec = this.recording;
    if (!rec) return;
    this.end();
    rec.cancel();
  }

  end() {
    this.recording = null;
    clearInterval(this.timer);
    document.removeEventListener('keydown', this.onKey, true);
    this.bar.hidden = true;
    this.mic.classList.remove('recording');
    this.time.textContent = '0:00';
    this.hooks.changed(false);
  }
}
