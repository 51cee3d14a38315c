// Test client for the real runner: spawns `sft serve` (tsx on native-runner/cli/main.ts), writes raw bytes
// or typed requests, and collects every stdout line checked with the host-side validator.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as path from 'node:path';
import { JsonLineDecoder } from '../../../protocol/jsonLines';
import {
  makeRequest, parseHostMessage, type EventMessage, type ReplyMessage, type RequestParams, type RequestResult, type RunnerMethod,
} from '../../../protocol/runner';

export const ROOT = path.join(__dirname, '../../..');

export class RunnerProcess {
  readonly child: ChildProcessWithoutNullStreams;
  readonly events: EventMessage[] = [];
  readonly invalid: string[] = [];
  stderr = '';
  private readonly pending = new Map<number, { method: RunnerMethod; resolve: (r: ReplyMessage) => void }>();
  private readonly waiters: { pred: (e: EventMessage) => boolean; resolve: (e: EventMessage) => void }[] = [];
  private nextId = 1;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(env: NodeJS.ProcessEnv = {}, cwd = ROOT) {
    this.child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'native-runner/cli/main.ts'), 'serve'], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const decoder = new JsonLineDecoder();
    this.child.stdout.on('data', (d: Buffer) => {
      for (const item of decoder.push(d)) {
        if (!item.ok) {
          this.invalid.push(item.error);
          continue;
        }
        const parsed = parseHostMessage(item.value, (id) => this.pending.get(id)?.method);
        if (!parsed.ok) {
          this.invalid.push(parsed.reason);
          continue;
        }
        const m = parsed.message;
        if (m.kind === 'reply') {
          const p = this.pending.get(m.id)!;
          this.pending.delete(m.id);
          p.resolve(m);
        } else {
          this.events.push(m);
          for (let i = this.waiters.length - 1; i >= 0; i--) {
            if (this.waiters[i]!.pred(m)) {
              this.waiters[i]!.resolve(m);
              this.waiters.splice(i, 1);
            }
          }
        }
      }
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exited = new Promise((resolve) => this.child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  writeRaw(data: string | Uint8Array): void {
    this.child.stdin.write(data);
  }

  /** Registers a request id as pending (for raw writes) and returns its reply. */
  expectReply(id: number, method: RunnerMethod): Promise<ReplyMessage> {
    return new Promise((resolve) => this.pending.set(id, { method, resolve }));
  }

  async request<M extends RunnerMethod>(method: M, params: RequestParams<M>): Promise<{ ok: true; result: RequestResult<M> } | { ok: false; message: string }> {
    const id = this.nextId++;
    const reply = this.expectReply(id, method);
    this.child.stdin.write(`${JSON.stringify(makeRequest(id, method, params))}\n`);
    const r = await reply;
    return r.ok ? { ok: true, result: r.result as RequestResult<M> } : { ok: false, message: r.error.message };
  }

  waitEvent(pred: (e: EventMessage) => boolean, timeoutMs = 120_000): Promise<EventMessage> {
    const found = this.events.find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`timed out waiting for an event; stderr: ${this.stderr.slice(-2000)}`)), timeoutMs);
      this.waiters.push({ pred, resolve: (e) => (clearTimeout(t), resolve(e)) });
    });
  }

  close(): void {
    this.child.stdin.end();
  }
}
