// Types of ngx-chat-client, the client of ngx_chat_module.

export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'closed';

/** `{"type":"message",...}` as the server sends it (SPEC section 4). */
export interface ChatMessage {
    type: 'message';
    room: string;
    /** opaque: compare only for equality */
    id: string;
    user: string;
    content: string;
    /** milliseconds since the Unix epoch */
    ts: number;
}

export interface Presence {
    type: 'presence';
    room: string;
    user: string;
    event: 'join' | 'leave';
}

/** A WebSocket constructor: the browser's, Node 22's, or `ws`'s. */
export interface WebSocketLike {
    send(data: string): void;
    close(code?: number, reason?: string): void;
    onmessage: ((ev: { data: unknown }) => void) | null;
    onclose: ((ev: { code: number; reason: string }) => void) | null;
    onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export interface ConnectOptions {
    /** sent as ?user= (chat_user $arg_user) */
    user?: string;
    /** a JWT, sent as ?token= (chat_jwt $arg_token) */
    token?: string;
    /**
     * Called `refreshBefore` ms before the token's `exp`, and when the
     * server closed with 1008 "token expired": returns the new token.
     */
    refreshToken?: (current: string | null) => string | Promise<string>;
    /** the WebSocket class; default globalThis.WebSocket */
    WebSocket?: WebSocketConstructor;
    /** query parameter names; default "user" and "token" */
    userParam?: string;
    tokenParam?: string;
    /** back-off: min(backoffMax, backoffMin * backoffFactor^n), then half to all of it */
    backoffMin?: number;
    backoffMax?: number;
    backoffFactor?: number;
    /** ms from the WebSocket's creation to "welcome"; default 10000 */
    connectTimeout?: number;
    /** retry sends refused with rate_limited after retry_after_ms; default false */
    retryRateLimited?: boolean | number;
    /** retries when retryRateLimited is true; default 5 */
    maxRateLimitRetries?: number;
    /** ms before exp the token is refreshed; default 30000 (at most half its life) */
    refreshBefore?: number;
    /** the server's chat_max_message_size: larger sends are refused here (too_big); default 4096 */
    maxMessageSize?: number;
    /** message ids remembered per room for dedupe; default 5000 */
    dedupeWindow?: number;
    /** history asked when joining again a room where no message was seen; default 1000 */
    historyOnRejoin?: number;
}

export interface JoinOptions {
    /** replay the last N messages (at most 1000) */
    history?: number;
    /**
     * replay everything after this id (the next resume starts there too);
     * messages seen already are not emitted again
     */
    since?: string;
}

export interface JoinResult {
    room: string;
    /** users present */
    members: number;
    /** the replay: messages not seen before, oldest first */
    messages: ChatMessage[];
    /** false: the server no longer had everything asked for */
    complete: boolean;
}

export interface HistoryResult {
    room: string;
    messages: ChatMessage[];
    complete: boolean;
}

export interface HistoryEvent {
    room: string;
    messages: ChatMessage[];
    complete: boolean;
    /** a history() request, a join's replay, or an automatic rejoin's */
    request: 'history' | 'join' | 'rejoin';
    since?: string;
}

export interface StateDetail {
    /** close code and reason of the connection that ended */
    code?: number;
    reason?: string;
    /** reconnecting: attempt number and delay in ms (null: waiting for a token) */
    attempt?: number;
    delay?: number | null;
    waitingForToken?: boolean;
    /** open: the user id of "welcome" */
    user?: string;
}

/** A refused request: `code` is the server's error code or a local one. */
export declare class ChatError extends Error {
    /**
     * bad_request, not_member, rate_limited, too_many_rooms, forbidden,
     * unavailable (server); too_big, closed, left, token_expired,
     * refresh_failed, connect_failed, disconnected (this library)
     */
    code: string;
    /** with rate_limited */
    retryAfterMs?: number;
    /** the error frame, when the server sent one */
    frame?: Record<string, unknown>;
    constructor(code: string, message?: string, frame?: Record<string, unknown>);
}

export interface ChatEvents {
    message: (m: ChatMessage, meta: { replay: boolean }) => void;
    presence: (p: Presence) => void;
    history: (h: HistoryEvent) => void;
    /** a resume ("since") the server could not replay completely */
    gap: (g: { room: string; since: string }) => void;
    joined: (j: JoinResult, meta: { rejoin: boolean }) => void;
    state: (state: ConnectionState, detail: StateDetail) => void;
    connecting: (detail: StateDetail) => void;
    open: (detail: StateDetail) => void;
    reconnecting: (detail: StateDetail) => void;
    closed: (detail: StateDetail) => void;
    welcome: (f: { type: 'welcome'; user: string }) => void;
    refreshed: (r: { exp: number | null }) => void;
    /** a rate_limited send that will be sent again */
    retry: (r: { ref: string; room: string; retryAfterMs: number }) => void;
    /** errors not tied to a pending promise */
    error: (e: ChatError) => void;
    /** every frame in and out (debugging) */
    frame: (dir: 'in' | 'out', frame: Record<string, unknown>) => void;
}

export declare class ChatClient {
    constructor(url: string, options?: ConnectOptions);
    readonly options: Required<Omit<ConnectOptions, 'user' | 'token' | 'refreshToken' | 'WebSocket'>> & ConnectOptions;
    readonly url: string;
    readonly state: ConnectionState;
    /** the user id of the last "welcome" */
    readonly user: string | null;
    token: string | null;
    /** rooms joined or being joined */
    readonly rooms: string[];

    on<E extends keyof ChatEvents>(event: E, fn: ChatEvents[E]): this;
    once<E extends keyof ChatEvents>(event: E, fn: ChatEvents[E]): this;
    off<E extends keyof ChatEvents>(event: E, fn?: ChatEvents[E]): this;

    /** join (and after each reconnection join again with since = lastId) */
    join(room: string, options?: JoinOptions): Promise<JoinResult>;
    leave(room: string): Promise<unknown>;
    /** resolves with the message id of the ack; rejects with a ChatError */
    send(room: string, content: string,
         options?: { retryRateLimited?: boolean | number }): Promise<string>;
    /** older messages, oldest first */
    history(room: string, options?: { limit?: number; before?: string }): Promise<HistoryResult>;
    who(room: string): Promise<string[]>;
    /** a new token: sent as a refresh, or used to reconnect after expiry */
    setToken(token: string): void;
    /** reconnect now instead of after the back-off */
    reconnect(): void;
    /** the last message id seen in a room */
    lastId(room: string): string | null;
    close(): void;
}

export declare function connect(url: string, options?: ConnectOptions): ChatClient;
/** exp of a JWT in ms since the epoch, or null (no signature check) */
export declare function tokenExpiry(token: string): number | null;
export declare const VERSION: string;
export declare const STATES: ConnectionState[];
export default connect;
