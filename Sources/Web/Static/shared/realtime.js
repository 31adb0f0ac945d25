// The one realtime connection of the page: /v1/events, authenticated by a single-use ticket
// (browsers cannot set headers on a WebSocket), resumed with ?since=<last cursor> after a drop,
// reconnecting with exponential backoff and jitter.

const RESUME = 4000;          // the server says: reconnect with your cursor now
const SIGNED_OUT = 4001;      // this session or the account ended: sign in again

export class Realtime {
  #call; #emit; #socket = null; #timer = null; #wanted = false; #attempt = 0;
  #readyWaiters = [];
  cursor = null;
  status = 'offline';

  constructor({ call, emit, maxBackoffMs = 15000 }) {
    this.#call = call;
    this.#emit = emit;
    this.maxBackoffMs = maxBackoffMs;
  }

  /**
   * Connects if not connected. `since` is where the caller's data was taken (a page's cursor):
   * the feed replays everything after it. An open connection is already continuous and keeps its
   * position. Resolves once the server said `ready`.
   */
  start(since) {
    if (!this.#wanted) {
      this.#wanted = true;
      if (since !== undefined && since !== null) this.cursor = since;
      this.#connect();
    }
    return this.ready();
  }

  ready() {
    if (this.status === 'live') return Promise.resolve(this.cursor);
    return new Promise((resolve) => this.#readyWaiters.push(resolve));
  }

  stop() {
    this.#wanted = false;
    clearTimeout(this.#timer);
    const s = this.#socket;
    this.#socket = null;
    if (s) s.close(1000, 'bye');
    this.cursor = null;
    this.#setStatus('offline');
  }

  /** Tries again now instead of waiting out the backoff (the browser says it is back online). */
  nudge() {
    if (this.#wanted && this.status === 'reconnecting' && !this.#socket) {
      clearTimeout(this.#timer);
      this.#connect();
    }
  }

  send(frame) {
    if (this.#socket && this.#socket.readyState === WebSocket.OPEN) {
      this.#socket.send(JSON.stringify(frame));
      return true;
    }
    return false;
  }

  #setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.#emit('realtime:status', { status });
  }

  async #connect() {
    if (!this.#wanted) return;
    this.#setStatus(this.#attempt === 0 ? 'connecting' : 'reconnecting');
    let ticket;
    try {
      ticket = (await this.#call('streams/Token', {})).token;
    } catch (e) {
      if (e.code === 401) { this.#emit('session:ended', {}); return; }
      return this.#retry();
    }
    if (!this.#wanted) return;
    const url = new URL('/v1/events', location.href);
    url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('ticket', ticket);
    if (this.cursor !== null) url.searchParams.set('since', String(this.cursor));
    const socket = new WebSocket(url);
    this.#socket = socket;
    socket.onmessage = (m) => {
      if (this.#socket !== socket) return;
      let frame;
      try { frame = JSON.parse(m.data); } catch { return; }
      switch (frame.type) {
        case 'ready':
          this.cursor = frame.cursor;
          this.#attempt = 0;
          this.#setStatus('live');
          for (const r of this.#readyWaiters.splice(0)) r(this.cursor);
          break;
        case 'event':
          this.cursor = frame.cursor;
          this.#emit('realtime:event', frame);
          this.#emit(`realtime:${frame.event}`, frame.data, frame);
          break;
        case 'reload':
          // Our cursor is older than the log keeps: whoever shows data must fetch it again.
          this.cursor = frame.cursor;
          this.#emit('realtime:reload', frame);
          break;
        case 'typing':
        case 'presence':
          this.#emit(`realtime:${frame.type}`, frame);
          break;
        default:
          break;
      }
    };
    socket.onclose = (e) => {
      if (this.#socket !== socket) return;
      this.#socket = null;
      if (!this.#wanted) return;
      if (e.code === SIGNED_OUT) { this.#emit('session:ended', {}); return; }
      if (e.code === RESUME) { this.#attempt = 0; this.#connect(); return; }
      this.#retry();
    };
  }

  #retry() {
    if (!this.#wanted) return;
    this.#setStatus('reconnecting');
    const step = Math.min(this.maxBackoffMs, 500 * 2 ** this.#attempt);
    this.#attempt += 1;
    const delay = step / 2 + Math.random() * step / 2;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }
}
