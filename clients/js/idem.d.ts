// Types for idem.js: the Idem client for browsers and Node 20+.

export interface IdemClientOptions {
  /** Prefix for relative paths. Default: '' (paths are used as given). */
  baseUrl?: string;
  /** Header carrying the key. Default: 'Idempotency-Key'. */
  headerName?: string;
  /** Each attempt's own timeout (an AbortSignal the client owns); a timed-out attempt is retried with the same key. Default: 10000. */
  timeoutMs?: number;
  /** Attempts per send, the first included. Default: 4. */
  maxAttempts?: number;
  /** Statuses retried with the same key. Default: [409, 502, 503, 504]. Other 4xx are never retried. */
  retryOn?: readonly number[];
  /** First backoff ceiling; doubles per retry, half of it random (jitter). Default: 250. */
  backoffMs?: number;
  /** Largest backoff. Default: 5000. */
  maxBackoffMs?: number;
  /** Largest wait taken from a Retry-After header. Default: 10000. */
  maxRetryAfterMs?: number;
  /** Headers added to every request. */
  headers?: HeadersInit;
  /** fetch's credentials mode. */
  credentials?: RequestCredentials;
  /** The fetch to use. Default: globalThis.fetch. */
  fetch?: typeof fetch;
  /** Called before each retry. */
  onRetry?: (info: { attempt: number; error: IdemError; idempotencyKey?: string }) => void;
}

export interface OperationOptions extends Pick<IdemClientOptions, 'timeoutMs' | 'maxAttempts' | 'retryOn' | 'backoffMs' | 'maxBackoffMs' | 'maxRetryAfterMs' | 'onRetry'> {
  /** A key of your own (for example derived from a business id); null sends none (and then never retries a POST/PATCH). */
  idempotencyKey?: string | null;
  headers?: HeadersInit;
}

export interface SendOptions extends Pick<IdemClientOptions, 'timeoutMs' | 'maxAttempts' | 'onRetry'> {
  /** The caller's cancellation: stops at once, never retried. */
  signal?: AbortSignal;
}

export interface IdemResult<T = unknown> {
  status: number;
  /** The parsed JSON body (text when not JSON, null when empty). */
  data: T;
  headers: Headers;
  /** True when the server replayed a stored response (Idempotent-Replayed: true). */
  replayed: boolean;
  /** The server's X-Request-Id. */
  requestId?: string;
  idempotencyKey?: string;
  /** Attempts this send took. */
  attempts: number;
  /** True when a guard got this result from another tab's request. */
  joined?: boolean;
}

export class IdemError extends Error {
  idempotencyKey?: string;
  attempts?: number;
}

export class HttpError extends IdemError {
  status: number;
  title: string;
  detail?: string;
  type?: string;
  requestId?: string;
  replayed: boolean;
  /** The problem+json body, when the response had one. */
  problem?: { type?: string; title?: string; status?: number; detail?: string; requestId?: string; [member: string]: unknown };
  body: unknown;
  headers: Headers;
}

/** 422: this key was already used for a different request. */
export class IdempotencyKeyReusedError extends HttpError {}

export class TimeoutError extends IdemError {
  timeoutMs: number;
}

export class NetworkError extends IdemError {}

export class IdemClient {
  constructor(options?: IdemClientOptions);
  readonly options: Required<Omit<IdemClientOptions, 'headers' | 'credentials' | 'onRetry'>> & IdemClientOptions;
  operation(method: string, path: string, body?: unknown, options?: OperationOptions): IdempotentOperation;
  post<T = unknown>(path: string, body?: unknown, options?: OperationOptions & SendOptions): Promise<IdemResult<T>>;
  patch<T = unknown>(path: string, body?: unknown, options?: OperationOptions & SendOptions): Promise<IdemResult<T>>;
}

export class IdempotentOperation {
  readonly method: string;
  readonly url: string;
  /** Made when the operation is created; the same on every attempt and every send. */
  readonly key?: string;
  readonly attempts: number;
  readonly done: boolean;
  readonly inFlight: boolean;
  send<T = unknown>(options?: SendOptions): Promise<IdemResult<T>>;
}

export interface FormRequest {
  method?: string;
  path: string;
  body?: unknown;
  options?: OperationOptions & SendOptions;
}

export interface FormGuardState {
  busy: boolean;
  ignored: number;
  submitted: number;
  joined: number;
  key?: string;
}

export interface FormGuardOptions {
  client: IdemClient;
  /** Builds the request from the form's fields. */
  request: (data: FormData, form: HTMLFormElement) => FormRequest;
  onResult?: (result: IdemResult) => void;
  onError?: (error: unknown) => void;
  onStateChange?: (state: FormGuardState) => void;
  /** A name shared by the tabs of one origin: the same fields submitted in two tabs share one request. */
  channel?: string;
  /** How long a new guard listens for the other tabs' in-flight intents before its first submission is sent. Default: 500. */
  helloMs?: number;
  /** How long after another tab's success a submission of the same fields gets that tab's result instead of sending. Default: 5000. */
  joinWindowMs?: number;
  /** How long a joining tab waits for the other tab before sending the same key itself. Default: timeoutMs × maxAttempts. */
  joinTimeoutMs?: number;
}

export class FormGuard {
  readonly ignored: number;
  readonly submitted: number;
  readonly joined: number;
  readonly busy: boolean;
  readonly currentKey?: string;
  submit<T = unknown>(submitter?: HTMLElement | null): Promise<IdemResult<T>>;
  destroy(): void;
}

export function guardForm(form: HTMLFormElement, options: FormGuardOptions): FormGuard;
export function newIdempotencyKey(): string;
export function parseRetryAfter(value: string | null | undefined, now?: number): number | undefined;
export function retryDelay(
  retry: number,
  options: { backoffMs: number; maxBackoffMs: number; maxRetryAfterMs: number; random?: () => number },
  retryAfter?: string | null,
  now?: number): number;
