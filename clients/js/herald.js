// Herald browser client: one ES module, no dependencies, no build step.
//
//   import { HeraldClient } from "./herald.js";
//   const herald = new HeraldClient("wss://example.com/ws", { token: () => fetchToken() });
//   herald.addEventListener("message", (e) => console.log(e.detail.group, e.detail.data));
//   herald.connect();
//   await herald.subscribe("chat.lobby");
//   await herald.publish("chat.lobby", { text: "hi" });
//
// It reconnects by itself (full-jitter exponential backoff from 0.5 s to 20 s, reset after a
// good connection) and resubscribes every group, with `since` for groups whose messages carry
// offsets, so a client that comes back on another instance receives what it missed.

/** Error codes of the protocol, each with what a caller can do about it. */
export const ErrorCodes = Object.freeze({
  bad_request: "the request was malformed",
  unknown_type: "the server does not know this request",
  invalid_group: "the group name is invalid",
  forbidden: "not allowed",
  too_large: "the request is too large",
  rate_limited: "too many requests: slow down",
  unavailable: "the server cannot reach its broker: retry later",
  internal: "server error",
  disconnected: "the connection closed before the answer came",
});

/** A refused request: `code` is one of {@link ErrorCodes}. */
export class HeraldError extends Error {
  constructor(code, message) {
    super(`${code}: ${message || ErrorCodes[code] || "error"}`);
    this.name = "HeraldError";
    this.code = code;
  }
}

/** Close codes after which reconnecting cannot help. */
const TERMINAL_CLOSES = new Set([4003]);

export class HeraldClient extends EventTarget {
  /**
   * @param {string} url WebSocket URL (`ws://host/ws`, or a route such as `/ws/chat/lobby`).
   * @param {object} [options]
   * @param {string|(() => string|Promise<string>)} [options.token] JWT, or a function giving a fresh one.
   * @param {number} [options.minDelay=500] first reconnect delay cap, ms
   * @param {number} [options.maxDelay=20000] largest reconnect delay cap, ms
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { minDelay: 500, maxDelay: 20000, ...options };
    this.state = "closed";
    this.node = null;
    this.clientId = null;
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map();
    this._groups = new Map(); // group -> { offset, epoch } (null when the group has no history)
    this._attempt = 0;
    this._timer = null;
    this._stopped = true;
  }

  /** Opens the connection and keeps it open until {@link close}. */
  connect() {
    this._stopped = false;
    this._open();
  }

  /** Closes for good: no reconnect. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000);
    this._setState("closed");
  }

  /** Joins `group`; resolves with the server's result (history position, if any). */
  async subscribe(group) {
    const result = await this._request({ type: "subscribe", group });
    this._groups.set(group, result && "epoch" in result ? { offset: result.offset, epoch: result.epoch } : null);
    return result;
  }

  /** Leaves `group` (and stops resubscribing it). */
  async unsubscribe(group) {
    this._groups.delete(group);
    return this._request({ type: "unsubscribe", group });
  }

  /** Publishes `data` to `group`. */
  publish(group, data) {
    return this._request({ type: "publish", group, data });
  }

  /** Who is subscribed to `group` (namespaces with presence). */
  async presence(group) {
    return (await this._request({ type: "presence", group })).clients;
  }

  /** A round trip to the server. */
  ping() {
    return this._request({ type: "ping" });
  }

  async _open() {
    clearTimeout(this._timer);
    this._setState("connecting");
    let url = this.url;
    const token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
    if (token) url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(token);
    const ws = new WebSocket(url);
    this._ws = ws;
    ws.onmessage = (event) => this._frame(JSON.parse(event.data));
    ws.onclose = (event) => this._closed(ws, event);
  }

  _frame(msg) {
    switch (msg.type) {
      case "welcome":
        this.node = msg.node;
        this.clientId = msg.client;
        this._attempt = 0;
        this._setState("open");
        this._resubscribe();
        break;
      case "reply":
      case "error": {
        const pending = this._pending.get(msg.id);
        if (!pending) break;
        this._pending.delete(msg.id);
        if (msg.type === "reply") pending.resolve(msg.result);
        else pending.reject(new HeraldError(msg.code, msg.message));
        break;
      }
      case "message": {
        if ("offset" in msg && this._groups.has(msg.group)) {
          this._groups.set(msg.group, { offset: msg.offset, epoch: msg.epoch });
        }
        this._emit("message", msg);
        break;
      }
      case "join":
      case "leave":
        this._emit(msg.type, msg);
        break;
    }
  }

  /** After a reconnect: every group again, recovering where the group keeps history. */
  async _resubscribe() {
    for (const [group, position] of this._groups) {
      const request = { type: "subscribe", group };
      if (position) request.since = { offset: position.offset, epoch: position.epoch };
      try {
        const result = await this._request(request);
        if (result && "epoch" in result) {
          if (position && !result.recovered) this._emit("recovered", { group, recovered: false });
          // When recovering, the missed messages follow the reply and advance the position
          // themselves; otherwise the reply's position is where the group now stands.
          if (!(position && result.recovered)) this._groups.set(group, { offset: result.offset, epoch: result.epoch });
        }
      } catch (error) {
        this._emit("error", { group, error });
      }
    }
  }

  _closed(ws, event) {
    if (ws !== this._ws) return;
    this._ws = null;
    for (const pending of this._pending.values()) pending.reject(new HeraldError("disconnected"));
    this._pending.clear();
    this._emit("disconnect", { code: event.code, reason: event.reason });
    if (this._stopped || TERMINAL_CLOSES.has(event.code)) {
      this._setState("closed");
      return;
    }
    this._setState("reconnecting");
    // Full jitter: a random delay up to an exponentially growing cap.
    const cap = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this._attempt);
    this._attempt += 1;
    this._timer = setTimeout(() => this._open(), Math.random() * cap);
  }

  _request(message) {
    if (!this._ws || this.state !== "open") return Promise.reject(new HeraldError("disconnected", "not connected"));
    const id = this._nextId++;
    this._ws.send(JSON.stringify({ ...message, id }));
    return new Promise((resolve, reject) => this._pending.set(id, { resolve, reject }));
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, node: this.node, client: this.clientId });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
