/**
 * RunnerClient: spawns and supervises the runner process (`node dist/runner.js serve`) and talks the
 * JSON-lines protocol of protocol/runner.ts over its stdio. Plain Node (no `vscode` import) so it is
 * tested against fake and real runners without VS Code.
 *
 * Contract: `request(method, params)` sends a typed request and resolves with the validated result, or
 * rejects with the runner's error (message + where), a timeout, or the process's death (with the last
 * stderr lines). Events are validated and dispatched to `on(event)` listeners; `token` events go to the
 * request that asked for them. Malformed lines are reported through `onProtocolError`, never thrown.
 * `dispose()` closes stdin, then kills the process if it has not exited within a grace period.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { JsonLineDecoder, encodeJsonLine } from '../protocol/jsonLines';
import {
  makeRequest,
  parseHostMessage,
  type RequestParams,
  type RequestResult,
  type RunnerEventName,
  type RunnerEvents,
  type RunnerMethod,
} from '../protocol/runner';

export interface RunnerSpawnOptions {
  /** Executable (a Node binary; VS Code's own with ELECTRON_RUN_AS_NODE=1 by default). */
  command: string;
  args: string[];
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface RunnerExit {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** True when the exit was asked for (dispose/shutdown). */
  expected: boolean;
  stderrTail: string;
}

/**
 * One line for a crash notification: how the runner ended and its last stderr lines (non-modal VS Code
 * messages show no detail, so the lines go into the message itself).
 */
export function describeExit(e: Pick<RunnerExit, 'code' | 'signal' | 'stderrTail'>, duringTraining: boolean, lines = 3): string {
  const how = e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
  const tail = e.stderrTail
    .split('\n')
    .map((l) => l.trim())
    .filter(Boolean)
    .slice(-lines);
  return `The SFT runner ${how}${duringTraining ? ' during training' : ''}${tail.length ? `: ${tail.join(' | ')}` : ' (no output on stderr)'}`;
}

export class RunnerError extends Error {
  constructor(
    message: string,
    readonly where?: string,
    readonly stderrTail?: string,
  ) {
    super(message);
    this.name = 'RunnerError';
  }
}

interface Pending {
  method: RunnerMethod;
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer?: NodeJS.Timeout;
  onToken?: (text: string) => void;
}

type Listener<E extends RunnerEventName> = (data: RunnerEvents[E]) => void;

/** Default request timeouts (ms); 0 = none (long-running requests end by reply, cancel or exit). */
export const DEFAULT_TIMEOUTS: Record<RunnerMethod, number> = {
  train: 30 * 60_000,
  stop: 60_000,
  status: 30_000,
  plan: 5 * 60_000,
  preview: 5 * 60_000,
  chat: 0,
  cancel: 30_000,
  evaluate: 0,
  shutdown: 15_000,
};

export class RunnerClient {
  private proc: ChildProcess | undefined;
  private decoder = new JsonLineDecoder();
  private stderrDecoder = new TextDecoder();
  private stderrBuf = '';
  private readonly stderrLines: string[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<RunnerEventName, Set<(d: never) => void>>();
  private readonly exitListeners = new Set<(e: RunnerExit) => void>();
  private readonly stderrListeners = new Set<(line: string) => void>();
  private readonly protocolErrorListeners = new Set<(reason: string) => void>();
  private closing = false;
  private exitInfo: RunnerExit | undefined;

  constructor(
    private readonly options: RunnerSpawnOptions,
    private readonly tuning: { stderrTailLines?: number; killGraceMs?: number; timeouts?: Partial<Record<RunnerMethod, number>> } = {},
  ) {}

  get running(): boolean {
    return this.proc !== undefined && this.exitInfo === undefined;
  }
  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Starts the process (idempotent while it runs). */
  start(): void {
    if (this.running) return;
    this.closing = false;
    this.exitInfo = undefined;
    this.decoder = new JsonLineDecoder();
    this.stderrDecoder = new TextDecoder();
    this.stderrBuf = '';
    this.stderrLines.length = 0;
    const proc = spawn(this.options.command, this.options.args, {
      cwd: this.options.cwd,
      env: this.options.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    this.proc = proc;
    proc.stdout!.on('data', (chunk: Buffer) => this.onStdout(chunk));
    proc.stdout!.on('end', () => this.onLines(this.decoder.end()));
    proc.stderr!.on('data', (chunk: Buffer) => this.takeStderr(this.stderrDecoder.decode(chunk, { stream: true })));
    proc.stdin!.on('error', () => {
      /* EPIPE after the child died: reported by 'exit' */
    });
    proc.on('error', (err) => {
      this.stderrLines.push(`spawn failed: ${err.message}`);
      this.finish({ code: null, signal: null });
    });
    proc.on('exit', (code, signal) => {
      // Let the last stdout/stderr chunks arrive before rejecting what is pending.
      setImmediate(() => this.finish({ code, signal }));
    });
  }

  /** Sends a request; resolves with its validated result. */
  request<M extends RunnerMethod>(
    method: M,
    params: RequestParams<M>,
    opts: { timeoutMs?: number; onToken?: (text: string) => void; onId?: (id: number) => void } = {},
  ): Promise<RequestResult<M>> {
    if (!this.running) this.start();
    const id = this.nextId++;
    opts.onId?.(id);
    return new Promise<RequestResult<M>>((resolve, reject) => {
      const p: Pending = { method, resolve: resolve as (v: unknown) => void, reject, onToken: opts.onToken };
      const timeout = opts.timeoutMs ?? this.tuning.timeouts?.[method] ?? DEFAULT_TIMEOUTS[method];
      if (timeout > 0) {
        p.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new RunnerError(`runner did not answer "${method}" within ${timeout >= 10_000 ? Math.round(timeout / 1000) : (timeout / 1000).toFixed(1)} s`));
        }, timeout);
      }
      this.pending.set(id, p);
      try {
        this.proc!.stdin!.write(encodeJsonLine(makeRequest(id, method, params)));
      } catch (e) {
        this.settle(id);
        reject(new RunnerError(`cannot write to the runner: ${(e as Error).message}`));
      }
    });
  }

  on<E extends RunnerEventName>(event: E, listener: Listener<E>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener as (d: never) => void);
    return () => set!.delete(listener as (d: never) => void);
  }
  onExit(listener: (e: RunnerExit) => void): () => void {
    this.exitListeners.add(listener);
    return () => this.exitListeners.delete(listener);
  }
  onStderr(listener: (line: string) => void): () => void {
    this.stderrListeners.add(listener);
    return () => this.stderrListeners.delete(listener);
  }
  onProtocolError(listener: (reason: string) => void): () => void {
    this.protocolErrorListeners.add(listener);
    return () => this.protocolErrorListeners.delete(listener);
  }

  /** The last stderr lines (crash reports show these). */
  stderrTail(): string {
    const tail = this.stderrBuf ? [...this.stderrLines, this.stderrBuf] : this.stderrLines;
    return tail.join('\n');
  }

  /** Ends the runner: closes stdin (the runner exits when it closes) and kills it after a grace period. */
  async dispose(): Promise<void> {
    const proc = this.proc;
    if (!proc || this.exitInfo) return;
    this.closing = true;
    const exited = new Promise<void>((r) => this.onExit(() => r()));
    try {
      proc.stdin!.end();
    } catch {
      /* already closed */
    }
    const grace = this.tuning.killGraceMs ?? 2000;
    const timer = setTimeout(() => {
      if (!this.exitInfo) proc.kill('SIGKILL');
    }, grace);
    await exited;
    clearTimeout(timer);
  }

  /** Kills at once (extension deactivation must not wait on a busy runner). */
  kill(): void {
    if (!this.proc || this.exitInfo) return;
    this.closing = true;
    this.proc.kill('SIGKILL');
  }

  private onStdout(chunk: Buffer): void {
    this.onLines(this.decoder.push(chunk));
  }

  private onLines(lines: ReturnType<JsonLineDecoder['push']>): void {
    for (const line of lines) {
      if (!line.ok) {
        this.protocolError(`${line.error}${line.line ? `: ${line.line}` : ''}`);
        continue;
      }
      const parsed = parseHostMessage(line.value, (id) => this.pending.get(id)?.method);
      if (!parsed.ok) {
        this.protocolError(parsed.reason);
        // A malformed reply to a pending request fails that request rather than leaving it hanging.
        if (parsed.id !== undefined && this.pending.has(parsed.id)) {
          this.settle(parsed.id)?.reject(new RunnerError(`malformed reply from the runner: ${parsed.reason}`));
        }
        continue;
      }
      const m = parsed.message;
      if (m.kind === 'reply') {
        const p = this.settle(m.id);
        if (!p) continue;
        if (m.ok) p.resolve(m.result);
        else p.reject(new RunnerError(m.error.message, m.error.where));
      } else {
        if (m.event === 'token') {
          const data = m.data as RunnerEvents['token'];
          this.pending.get(data.requestId)?.onToken?.(data.text);
        }
        for (const l of this.listeners.get(m.event) ?? []) {
          try {
            (l as (d: unknown) => void)(m.data);
          } catch (e) {
            this.protocolError(`listener for ${m.event} threw: ${(e as Error).message}`);
          }
        }
      }
    }
  }

  private takeStderr(text: string): void {
    this.stderrBuf += text;
    const parts = this.stderrBuf.split('\n');
    this.stderrBuf = parts.pop() ?? '';
    const max = this.tuning.stderrTailLines ?? 40;
    for (const line of parts) {
      this.stderrLines.push(line);
      if (this.stderrLines.length > max) this.stderrLines.shift();
      for (const l of this.stderrListeners) l(line);
    }
    if (this.stderrBuf.length > 64_000) this.stderrBuf = this.stderrBuf.slice(-64_000);
  }

  private protocolError(reason: string): void {
    for (const l of this.protocolErrorListeners) l(reason);
  }

  private settle(id: number): Pending | undefined {
    const p = this.pending.get(id);
    if (!p) return undefined;
    this.pending.delete(id);
    if (p.timer) clearTimeout(p.timer);
    return p;
  }

  private finish(info: { code: number | null; signal: NodeJS.Signals | null }): void {
    if (this.exitInfo) return;
    const exit: RunnerExit = { ...info, expected: this.closing, stderrTail: this.stderrTail() };
    this.exitInfo = exit;
    const how = info.signal ? `was killed by ${info.signal}` : `exited with code ${info.code}`;
    for (const id of [...this.pending.keys()]) {
      const p = this.settle(id)!;
      p.reject(new RunnerError(`the runner ${how} before answering "${p.method}"`, undefined, exit.stderrTail));
    }
    for (const l of this.exitListeners) l(exit);
  }
}
