// Herald browser client: one ES module, no dependencies, no build step.
//
//   import { HeraldClient } from "./herald.js";
//   const herald = new HeraldClient("wss://example.com/ws", { token: () => fetchToken() });
//   herald.addEventListener("message", (e) => console.log(e.detail.group, e.detail.data));
//   herald.connect();
//   await herald.subscribe("chat.lobby");
//   await herald.publish("chat.lobby", { text: "hi" });
//
// `subscribe` remembers the group at once: it is subscribed as soon as the connection opens, and
// again after every reconnect. Other requests made while connecting or reconnecting wait for the
// connection (at most `requestTimeout`). The client reconnects by itself (full-jitter exponential
// backoff from 0.5 s to 20 s, reset after a good connection) and resubscribes every group, with
// `since` for groups whose messages carry offsets, so a client that comes back on another
// instance receives what it missed. Groups a route joins it to are recovered the same way, with
// `?since=` on the URL.

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
  timeout: "no connection within requestTimeout",
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

/** What both clients share: a `state`, and events whose `detail` says what happened. */
class Emitter extends EventTarget {
  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, node: this.node, client: this.clientId });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

export class HeraldClient extends Emitter {
  /**
   * @param {string} url WebSocket URL (`ws://host/ws`, or a route such as `/ws/chat/lobby`).
   * @param {object} [options]
   * @param {string|(() => string|Promise<string>)} [options.token] JWT, or a function giving a fresh one.
   * @param {number} [options.minDelay=500] first reconnect delay cap, ms
   * @param {number} [options.maxDelay=20000] largest reconnect delay cap, ms
   * @param {number} [options.requestTimeout=10000] how long a request waits for a connection, ms
   */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = { minDelay: 500, maxDelay: 20000, requestTimeout: 10000, ...options };
    this.state = "closed";
    this.node = null;
    this.clientId = null;
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // request id -> { resolve, reject }
    this._waiting = new Set(); // requests waiting for the connection to open
    // Groups asked for: group -> { position: {offset, epoch} | null, joined: [resolvers] }.
    this._groups = new Map();
    // Groups the route of the URL joins: group -> {offset, epoch}, for `?since=` on reconnect.
    this._routed = new Map();
    this._attempt = 0;
    this._timer = null;
    this._stopped = true;
  }

  /** Opens the connection and keeps it open until {@link close}. */
  connect() {
    this._stopped = false;
    if (!this._ws) this._open();
  }

  /**
   * Uses `token` (a JWT, or a function giving one before each connection) from now on. When
   * connected, reconnects at once so the server sees the new identity; resolves once open.
   */
  async authenticate(token) {
    this.options.token = token;
    if (this._ws) {
      const ws = this._ws;
      this._ws = null;
      ws.onclose = ws.onmessage = null;
      ws.close(1000);
      this._failPending();
      this._open();
    }
    if (this.state !== "open") await this._whenOpen();
  }

  /** Closes for good: no reconnect; requests waiting for a connection fail. */
  close() {
    this._stopped = true;
    clearTimeout(this._timer);
    if (this._ws) this._ws.close(1000);
    const closed = new HeraldError("disconnected", "closed");
    for (const waiter of this._waiting) waiter.reject(closed);
    this._waiting.clear();
    for (const entry of this._groups.values()) for (const waiter of entry.joined.splice(0)) waiter.reject(closed);
    this._setState("closed");
  }

  /**
   * Joins `group`, now or as soon as the connection opens, and after every reconnect; resolves
   * with the server's answer to the first subscription (history position, if any).
   */
  subscribe(group) {
    let entry = this._groups.get(group);
    if (!entry) {
      entry = { position: this._routed.get(group) || null, joined: [], joining: false };
      this._groups.set(group, entry);
      this._routed.delete(group);
    }
    const answer = new Promise((resolve, reject) => entry.joined.push({ resolve, reject }));
    if (this.state === "open" && !entry.joining) this._join(group, entry);
    return answer;
  }

  /** Leaves `group` (and stops resubscribing it). */
  async unsubscribe(group) {
    const entry = this._groups.get(group);
    this._groups.delete(group);
    if (entry) for (const waiter of entry.joined) waiter.reject(new HeraldError("disconnected", "unsubscribed"));
    if (this.state === "open") await this._request({ type: "unsubscribe", group });
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
    this._setState(this._attempt ? "reconnecting" : "connecting");
    const url = new URL(this.url, location.href);
    const token = typeof this.options.token === "function" ? await this.options.token() : this.options.token;
    if (token) url.searchParams.set("token", token);
    for (const [group, at] of this._routed) url.searchParams.append("since", `${group}:${at.offset}:${at.epoch}`);
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
        for (const [group, entry] of this._groups) this._join(group, entry);
        for (const waiter of this._waiting) waiter.resolve();
        this._waiting.clear();
        break;
      case "reply":
      case "error": {
        const pending = this._pending.get(msg.id);
        if (!pending) {
          if (msg.type === "error") this._emit("error", { group: null, error: new HeraldError(msg.code, msg.message) });
          break;
        }
        this._pending.delete(msg.id);
        if (msg.type === "reply") pending.resolve(msg.result);
        else pending.reject(new HeraldError(msg.code, msg.message));
        break;
      }
      case "message":
        if ("offset" in msg) this._advance(msg.group, { offset: msg.offset, epoch: msg.epoch });
        this._emit("message", msg);
        break;
      case "recovered":
        // A group joined by the route, or a gap on the server: where the group now stands.
        this._advance(msg.group, { offset: msg.offset, epoch: msg.epoch });
        if (!msg.recovered) this._emit("recovered", { group: msg.group, recovered: false });
        break;
      case "subscribed":
        // The URL's route or the backend (connect hook, control API) put this connection in a
        // group. A reconnect joins the route's groups again, recovering from here where they
        // keep history; the backend's are for this connection only.
        if ("offset" in msg) this._advance(msg.group, { offset: msg.offset, epoch: msg.epoch });
        this._emit("subscribed", { group: msg.group });
        break;
      case "unsubscribed":
        this._groups.delete(msg.group);
        this._routed.delete(msg.group);
        this._emit("unsubscribed", { group: msg.group, reason: msg.reason });
        break;
      case "join":
      case "leave":
        this._emit(msg.type, msg);
        break;
    }
  }

  /** Records the last position seen in `group`. */
  _advance(group, position) {
    const entry = this._groups.get(group);
    if (entry) entry.position = position;
    else this._routed.set(group, position);
  }

  /** Subscribes to one remembered group, recovering from its position if it has one. */
  async _join(group, entry) {
    const request = { type: "subscribe", group };
    const since = entry.position;
    if (since) request.since = { offset: since.offset, epoch: since.epoch };
    entry.joining = true;
    try {
      const result = await this._send(request).finally(() => (entry.joining = false));
      if (result && "epoch" in result) {
        if (since && !result.recovered) this._emit("recovered", { group, recovered: false });
        // When recovering, the missed messages follow the reply and advance the position
        // themselves; otherwise the reply's position is where the group now stands.
        if (!(since && result.recovered)) entry.position = { offset: result.offset, epoch: result.epoch };
      }
      for (const waiter of entry.joined.splice(0)) waiter.resolve(result);
    } catch (error) {
      if (error.code === "disconnected") return; // joined again after the reconnect
      this._groups.delete(group);
      for (const waiter of entry.joined.splice(0)) waiter.reject(error);
      this._emit("error", { group, error });
    }
  }

  _closed(ws, event) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._failPending();
    this._emit("disconnect", { code: event.code, reason: event.reason });
    if (this._stopped || TERMINAL_CLOSES.has(event.code)) {
      this.close();
      return;
    }
    this._setState("reconnecting");
    // Full jitter: a random delay up to an exponentially growing cap.
    const cap = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** this._attempt);
    this._attempt += 1;
    this._timer = setTimeout(() => this._open(), Math.random() * cap);
  }

  /** Requests in flight on a connection that is gone fail with `disconnected`. */
  _failPending() {
    for (const pending of this._pending.values()) pending.reject(new HeraldError("disconnected"));
    this._pending.clear();
  }

  /** Sends `message` once the connection is open (waiting at most `requestTimeout`). */
  async _request(message) {
    if (this.state !== "open") await this._whenOpen();
    return this._send(message);
  }

  _whenOpen() {
    if (this._stopped) return Promise.reject(new HeraldError("disconnected", "not connected: call connect()"));
    return new Promise((resolve, reject) => {
      const waiter = {
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (error) => {
          clearTimeout(timer);
          reject(error);
        },
      };
      const timer = setTimeout(() => {
        this._waiting.delete(waiter);
        reject(new HeraldError("timeout"));
      }, this.options.requestTimeout);
      this._waiting.add(waiter);
    });
  }

  _send(message) {
    if (!this._ws || this.state !== "open") return Promise.reject(new HeraldError("disconnected", "not connected"));
    const id = this._nextId++;
    this._ws.send(JSON.stringify({ ...message, id }));
    return new Promise((resolve, reject) => this._pending.set(id, { resolve, reject }));
  }
}

/**
 * Reads groups over Server-Sent Events (`GET /sse?groups=a,b`): for pages that only read, or
 * that sit behind proxies that break WebSockets. Emits the frames a {@link HeraldClient} gets,
 * each as an event of its `type` with the frame as `detail` (`message`, `subscribed`,
 * `recovered`, `unsubscribed`, `join`, `leave`, `error`), plus `state` and `disconnect`.
 *
 * The browser reconnects by itself and sends the last event id back, so groups with history
 * resume where they were, on any gateway. When a reconnect is refused (the gateway behind a
 * proxy was gone, say) the stream is opened again after a delay, from the same positions. A
 * close the server means as final (4001, 4003) stops it.
 */
export class HeraldEvents extends Emitter {
  /**
   * @param {string} url the stream's URL without query (`/sse`, `https://host/sse`)
   * @param {string[]} groups the groups to read
   * @param {object} [options]
   * @param {string} [options.token] JWT, sent as `?token=` (EventSource cannot set headers)
   * @param {number} [options.retryDelay=1000] delay before opening a refused stream again, ms
   */
  constructor(url, groups, options = {}) {
    super();
    this.url = url;
    this.groups = [...groups];
    this.options = { retryDelay: 1000, ...options };
    this.state = "closed";
    this.node = null;
    this.clientId = null;
    this.lastEventId = "";
    this._source = null;
    this._timer = null;
  }

  /** Opens the stream and keeps it open until {@link close}. */
  connect() {
    if (this._source) return;
    const query = new URLSearchParams({ groups: this.groups.join(",") });
    if (this.options.token) query.set("token", this.options.token);
    // A new EventSource cannot send Last-Event-ID: the positions go in the query instead.
    for (const position of this.lastEventId.split(",").filter(Boolean)) query.append("since", position);
    const source = new EventSource(`${this.url}?${query}`);
    this._source = source;
    this._setState("connecting");
    const frame = (event) => {
      if (event.lastEventId) this.lastEventId = event.lastEventId;
      const data = JSON.parse(event.data);
      if (data.type === "welcome") {
        this.node = data.node;
        this.clientId = data.client;
        this._setState("open");
      }
      this._emit(data.type, data);
    };
    const types = ["welcome", "message", "subscribed", "recovered", "unsubscribed", "join", "leave", "herald-error"];
    for (const type of types) {
      source.addEventListener(type, frame);
    }
    source.addEventListener("close", (event) => {
      const { code, reason } = JSON.parse(event.data);
      this._emit("disconnect", { code, reason });
      // The token of the URL will not get better: 4001 is final too.
      if (TERMINAL_CLOSES.has(code) || code === 4001) this.close();
    });
    source.onerror = () => {
      if (source !== this._source) return;
      if (source.readyState === EventSource.CLOSED) {
        // Refused (not a dropped stream, which the browser retries): open it again later.
        this._source = null;
        this._setState("reconnecting");
        this._timer = setTimeout(() => this.connect(), this.options.retryDelay);
      } else {
        this._setState("reconnecting");
      }
    };
  }

  /** Closes the stream for good. */
  close() {
    clearTimeout(this._timer);
    if (this._source) this._source.close();
    this._source = null;
    this._setState("closed");
  }
}
