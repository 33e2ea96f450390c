// Type declarations for herald.js.

export type ErrorCode =
  | "bad_request"
  | "unknown_type"
  | "invalid_group"
  | "forbidden"
  | "too_large"
  | "rate_limited"
  | "unavailable"
  | "internal"
  | "disconnected"
  | "timeout";

export declare const ErrorCodes: Readonly<Record<ErrorCode, string>>;

export declare class HeraldError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message?: string);
}

export type State = "closed" | "connecting" | "open" | "reconnecting";

export interface ClientInfo {
  client: string;
  user: string | null;
  node: string;
  info?: unknown;
}

export interface MessageEvent<T = unknown> {
  type: "message";
  group: string;
  data: T;
  /** Present for groups with history. */
  offset?: number;
  epoch?: string;
}

export interface SubscribeResult {
  offset?: number;
  epoch?: string;
  recovered?: boolean;
}

export interface HeraldClientOptions {
  /** A JWT, or a function returning a fresh one before each connection. */
  token?: string | (() => string | Promise<string>);
  /** First reconnect delay cap in ms (default 500). */
  minDelay?: number;
  /** Largest reconnect delay cap in ms (default 20000). */
  maxDelay?: number;
  /** How long a request made while (re)connecting waits for the connection, in ms (default 10000). */
  requestTimeout?: number;
}

export interface HeraldEventMap {
  state: CustomEvent<{ state: State; node: string | null; client: string | null }>;
  message: CustomEvent<MessageEvent>;
  join: CustomEvent<{ type: "join"; group: string; client: ClientInfo }>;
  leave: CustomEvent<{ type: "leave"; group: string; client: ClientInfo }>;
  /** Something missed in a group could not be recovered: reload that group's state. */
  recovered: CustomEvent<{ group: string; recovered: false }>;
  /** The URL's route or the backend (the connect hook, the control API) put this connection in a group. */
  subscribed: CustomEvent<{ group: string }>;
  /** The server took the client out of a group (its rights narrowed, or the backend did). */
  unsubscribed: CustomEvent<{ group: string; reason: string }>;
  disconnect: CustomEvent<{ code: number; reason: string }>;
  /** A remembered group could not be joined, or the route's groups refused one (`group` null). */
  error: CustomEvent<{ group: string | null; error: HeraldError }>;
}

export declare class HeraldClient extends EventTarget {
  constructor(url: string, options?: HeraldClientOptions);
  readonly url: string;
  readonly state: State;
  /** The node of the current connection. */
  readonly node: string | null;
  readonly clientId: string | null;
  connect(): void;
  /** Uses `token` from now on; reconnects at once when connected. Resolves once open. */
  authenticate(token: string | (() => string | Promise<string>)): Promise<void>;
  close(): void;
  /** Remembers `group` at once; joins it when the connection opens and after every reconnect. */
  subscribe(group: string): Promise<SubscribeResult | undefined>;
  unsubscribe(group: string): Promise<void>;
  publish(group: string, data: unknown): Promise<void>;
  presence(group: string): Promise<ClientInfo[]>;
  ping(): Promise<void>;
  addEventListener<K extends keyof HeraldEventMap>(
    type: K,
    listener: (event: HeraldEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}

export interface HeraldEventsOptions {
  /** JWT, sent as `?token=` (an EventSource cannot set headers). */
  token?: string;
  /** Delay before a refused stream is opened again, ms (default 1000). */
  retryDelay?: number;
}

export interface HeraldEventsEventMap {
  state: CustomEvent<{ state: "connecting" | "open" | "reconnecting" | "closed"; node: string | null; client: string | null }>;
  welcome: CustomEvent<{ type: "welcome"; client: string; node: string }>;
  message: CustomEvent<MessageEvent>;
  subscribed: CustomEvent<{ type: "subscribed"; group: string; offset?: number; epoch?: string }>;
  recovered: CustomEvent<{ type: "recovered"; group: string; recovered: boolean; offset: number; epoch: string }>;
  unsubscribed: CustomEvent<{ type: "unsubscribed"; group: string; reason: string }>;
  join: CustomEvent<{ type: "join"; group: string; client: ClientInfo }>;
  leave: CustomEvent<{ type: "leave"; group: string; client: ClientInfo }>;
  /** An error frame (a group could not be joined, say). */
  error: CustomEvent<{ type: "error"; code: string; message: string }>;
  /** The server ended the stream, with a WebSocket close code. */
  disconnect: CustomEvent<{ code: number; reason: string }>;
}

/** Reads groups over Server-Sent Events (`GET /sse`), resuming groups with history on reconnect. */
export declare class HeraldEvents extends EventTarget {
  constructor(url: string, groups: string[], options?: HeraldEventsOptions);
  readonly url: string;
  readonly groups: string[];
  readonly state: "connecting" | "open" | "reconnecting" | "closed";
  readonly node: string | null;
  readonly clientId: string | null;
  /** Where the stream stands in each group with history: `<group>:<offset>:<epoch>,...`. */
  readonly lastEventId: string;
  connect(): void;
  close(): void;
  addEventListener<K extends keyof HeraldEventsEventMap>(
    type: K,
    listener: (event: HeraldEventsEventMap[K]) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
}
