/**
 * Summarises ONNX Runtime profiles (issue #8): the Chrome-trace JSON files ORT writes for a session created
 * with `enableProfiling` (here: SFT_ORT_PROFILE=<path prefix>, see engine/ortSession.ts; the file is written
 * when the session is released).
 *
 *   npx tsx bench/ort-profile.ts <trace.json | folder>... [--top 25] [--all]
 *
 * Trace format (checked on CPU profiles of ORT 1.29): a JSON array of complete events {cat, name, ts, dur
 * (µs), tid, args}. cat "Session": model_loading_*, session_initialization, model_run (one per
 * session.run) and SequentialExecutor::Execute (one per graph execution: the main graph, and every
 * iteration of a Loop body, nested inside the Loop node's own event). cat "Node": `<node>_kernel_time` with
 * args.op_name and args.provider, one per node execution, Loop-body nodes included. A Loop/If/Scan node's
 * time contains its body's nodes, so "node time" below counts leaf nodes only (control-flow nodes are
 * reported apart). Events of cat "Kernel" (device kernels) appear only in CUPTI-enabled builds.
 *
 * On CUDA, the onnxruntime-node binaries are not built with CUPTI: a node's kernel time is then the host-side
 * time of its Compute() call — argument checks, allocation and the kernel *launch*, not the GPU's execution
 * (except where a kernel synchronises, e.g. a copy to the host). That is the point here: node time per step
 * is the CPU dispatch cost of a step, to hold against the step's wall time (if they are close, the GPU waits
 * for the host; if node time is far below the wall time, the GPU is the bottleneck). The profiler itself adds
 * a little host time per node (timestamps, size bookkeeping), so profiled runs are somewhat slower.
 *
 * For each file: the session's set-up time and, per model_run, its wall time, leaf-node time and node
 * executions, and for each Loop nesting depth the number of body executions, node executions per iteration
 * and the time per iteration (own nodes, and everything nested). For the file with the most node time (all
 * files with --all): the top op types (count, total ms, mean µs, share) and the top single nodes, over the
 * runs after the first (the first run of a session allocates and warms up; with one run, that run).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

export interface TraceEvent {
  cat: string;
  name: string;
  ts: number;
  dur: number;
  pid?: number;
  tid?: number;
  args?: Record<string, unknown>;
}

const CONTROL_FLOW = new Set(['Loop', 'If', 'Scan']);

/** Reads a trace; a file cut short (process killed while ORT wrote it) is read event by event, one per line. */
export function readTrace(file: string): { events: TraceEvent[]; note: string | null } {
  const text = fs.readFileSync(file, 'utf8');
  try {
    const parsed = JSON.parse(text) as unknown;
    const events = Array.isArray(parsed) ? parsed : ((parsed as { traceEvents?: unknown[] }).traceEvents ?? []);
    return { events: (events as TraceEvent[]).filter(isCompleteEvent), note: null };
  } catch {
    const events: TraceEvent[] = [];
    let bad = 0;
    for (const line of text.split('\n')) {
      const l = line.trim().replace(/,$/, '');
      if (!l.startsWith('{')) continue;
      try {
        const e = JSON.parse(l) as TraceEvent;
        if (isCompleteEvent(e)) events.push(e);
      } catch {
        bad++;
      }
    }
    return { events, note: `not valid JSON as a whole (cut short?): read ${events.length} events line by line, ${bad} unreadable lines skipped` };
  }
}

function isCompleteEvent(e: unknown): e is TraceEvent {
  const x = e as TraceEvent;
  return !!x && typeof x.cat === 'string' && typeof x.name === 'string' && typeof x.ts === 'number' && typeof x.dur === 'number';
}

/** An interval of the nesting tree: a model_run, an executor pass (graph or Loop-body iteration) or a node. */
interface Span {
  ev: TraceEvent;
  kind: 'run' | 'exec' | 'node' | 'other';
  op: string;
  children: Span[];
  /** Executor-pass depth: 1 = main graph, 2 = body of a Loop in it, … (0 for other spans). */
  depth: number;
}

function kindOf(e: TraceEvent): Span['kind'] {
  if (e.cat === 'Session' && e.name === 'model_run') return 'run';
  if (e.cat === 'Session' && /Executor::Execute$/.test(e.name)) return 'exec';
  if (e.cat === 'Node' && e.name.endsWith('_kernel_time')) return 'node';
  return 'other';
}

const RANK: Record<Span['kind'], number> = { run: 0, exec: 1, node: 2, other: 3 };

/**
 * Nests the spans of each thread by their start times (events of one thread are properly nested; a child
 * that ends a µs after its parent through rounding still belongs to it). Returns the top-level model_run spans.
 */
export function buildRuns(events: TraceEvent[]): Span[] {
  const byThread = new Map<string, Span[]>();
  for (const ev of events) {
    const kind = kindOf(ev);
    if (kind === 'other') continue;
    const key = `${ev.pid ?? 0}:${ev.tid ?? 0}`;
    const op = kind === 'node' ? String(ev.args?.op_name ?? ev.name.replace(/_kernel_time$/, '')) : ev.name;
    let list = byThread.get(key);
    if (!list) byThread.set(key, (list = []));
    list.push({ ev, kind, op, children: [], depth: 0 });
  }
  const runs: Span[] = [];
  for (const spans of byThread.values()) {
    spans.sort((a, b) => a.ev.ts - b.ev.ts || b.ev.dur - a.ev.dur || RANK[a.kind] - RANK[b.kind]);
    const stack: Span[] = [];
    for (const s of spans) {
      while (stack.length > 0 && s.ev.ts >= stack[stack.length - 1]!.ev.ts + stack[stack.length - 1]!.ev.dur) stack.pop();
      const parent = stack[stack.length - 1];
      if (s.kind === 'exec') {
        let d = 1;
        for (let i = stack.length - 1; i >= 0; i--) {
          if (stack[i]!.kind === 'exec') {
            d = stack[i]!.depth + 1;
            break;
          }
        }
        s.depth = d;
      }
      if (parent) parent.children.push(s);
      else if (s.kind === 'run') runs.push(s);
      // Spans outside any model_run (none in ORT's traces) are left out.
      stack.push(s);
    }
  }
  runs.sort((a, b) => a.ev.ts - b.ev.ts);
  return runs;
}

export interface DepthStats {
  depth: number;
  /** Executor passes at this depth (for depth ≥ 2: Loop-body iterations). */
  passes: number;
  /** Leaf-node executions directly in these passes (not in deeper Loop bodies), per pass. */
  ownNodesPerPass: number;
  /** Leaf-node executions in these passes and everything nested in them, per pass. */
  allNodesPerPass: number;
  /** Mean wall time of a pass (µs). */
  wallUsPerPass: number;
  /** Mean leaf-node time of a pass and everything nested (µs). */
  nodeUsPerPass: number;
}

export interface RunStats {
  wallUs: number;
  /** Sum of leaf-node times (µs): control-flow nodes excluded, as their time contains their bodies'. */
  nodeUs: number;
  nodeExecutions: number;
  controlFlowExecutions: number;
  byProvider: Map<string, number>;
  depths: DepthStats[];
  leaves: Span[];
}

function collectLeaves(s: Span, out: Span[]): void {
  for (const c of s.children) {
    if (c.kind === 'node' && !CONTROL_FLOW.has(c.op)) out.push(c);
    collectLeaves(c, out);
  }
}

export function runStats(run: Span): RunStats {
  const leaves: Span[] = [];
  collectLeaves(run, leaves);
  let controlFlowExecutions = 0;
  const byProvider = new Map<string, number>();
  for (const l of leaves) {
    const p = String(l.ev.args?.provider ?? '?');
    byProvider.set(p, (byProvider.get(p) ?? 0) + l.ev.dur);
  }
  const perDepth = new Map<number, { passes: number; own: number; all: number; wall: number; node: number }>();
  const walk = (s: Span): void => {
    for (const c of s.children) {
      if (c.kind === 'node' && CONTROL_FLOW.has(c.op)) controlFlowExecutions++;
      if (c.kind === 'exec') {
        const own = c.children.filter((x) => x.kind === 'node' && !CONTROL_FLOW.has(x.op)).length;
        const all: Span[] = [];
        collectLeaves(c, all);
        const d = perDepth.get(c.depth) ?? { passes: 0, own: 0, all: 0, wall: 0, node: 0 };
        d.passes++;
        d.own += own;
        d.all += all.length;
        d.wall += c.ev.dur;
        d.node += all.reduce((a, x) => a + x.ev.dur, 0);
        perDepth.set(c.depth, d);
      }
      walk(c);
    }
  };
  walk(run);
  const depths = [...perDepth.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([depth, d]) => ({ depth, passes: d.passes, ownNodesPerPass: d.own / d.passes, allNodesPerPass: d.all / d.passes, wallUsPerPass: d.wall / d.passes, nodeUsPerPass: d.node / d.passes }));
  return { wallUs: run.ev.dur, nodeUs: leaves.reduce((a, l) => a + l.ev.dur, 0), nodeExecutions: leaves.length, controlFlowExecutions, byProvider, depths, leaves };
}

export interface Aggregate {
  key: string;
  op: string;
  provider: string;
  count: number;
  totalUs: number;
}

/** Leaf-node time grouped by `keyOf` (op type, or node name), largest total first. */
export function aggregate(leaves: Span[], keyOf: (s: Span) => string): Aggregate[] {
  const m = new Map<string, Aggregate>();
  for (const l of leaves) {
    const key = keyOf(l);
    let a = m.get(key);
    if (!a) m.set(key, (a = { key, op: l.op, provider: String(l.ev.args?.provider ?? '?').replace(/ExecutionProvider$/, ''), count: 0, totalUs: 0 }));
    a.count++;
    a.totalUs += l.ev.dur;
  }
  return [...m.values()].sort((a, b) => b.totalUs - a.totalUs);
}

function ms(us: number): string {
  return (us / 1000).toFixed(us >= 100000 ? 0 : us >= 1000 ? 1 : 2);
}

function table(rows: string[][], align: ('l' | 'r')[]): string[] {
  const w = align.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (align[i] === 'l' ? c.padEnd(w[i]!) : c.padStart(w[i]!))).join('  ').trimEnd());
}

export function summarise(file: string, events: TraceEvent[], top: number, full: boolean): string[] {
  const out: string[] = [];
  const session = (n: string) => events.filter((e) => e.cat === 'Session' && e.name === n).reduce((a, e) => a + e.dur, 0);
  const loadUs = events.filter((e) => e.cat === 'Session' && e.name.startsWith('model_loading')).reduce((a, e) => a + e.dur, 0);
  const runs = buildRuns(events);
  const stats = runs.map(runStats);
  const gpuKernels = events.filter((e) => e.cat === 'Kernel');
  out.push(`== ${path.basename(file)}: ${events.length} events, model load ${ms(loadUs)} ms, session initialisation ${ms(session('session_initialization'))} ms, ${runs.length} runs`);
  if (runs.length === 0) return out;
  out.push('');
  out.push('per run (node time = leaf nodes; Loop/If/Scan excluded since their time holds their bodies):');
  const rows: string[][] = [['run', 'wall ms', 'outside graph ms', 'node ms', 'node/wall', 'node execs', 'loop execs', 'µs/node', 'by provider (ms)']];
  stats.forEach((s, i) => {
    const prov = [...s.byProvider.entries()].sort((a, b) => b[1] - a[1]).map(([p, us]) => `${p.replace(/ExecutionProvider$/, '')} ${ms(us)}`).join(', ');
    const main = s.depths.find((d) => d.depth === 1);
    const outside = main ? s.wallUs - main.passes * main.wallUsPerPass : NaN;
    rows.push([String(i + 1), ms(s.wallUs), Number.isNaN(outside) ? '—' : ms(outside), ms(s.nodeUs), `${((100 * s.nodeUs) / Math.max(s.wallUs, 1)).toFixed(0)} %`, String(s.nodeExecutions), String(s.controlFlowExecutions), (s.nodeUs / Math.max(s.nodeExecutions, 1)).toFixed(1), prov]);
  });
  out.push(...table(rows, ['r', 'r', 'r', 'r', 'r', 'r', 'r', 'r', 'l']));
  out.push("(outside graph = model_run minus the main graph's executor pass: copying feeds in and fetches out, i.e. host↔device on CUDA, which also waits for kernels still queued)");
  // The headline: per Loop iteration of the last run, host node time against wall time.
  const last = stats[stats.length - 1]!;
  for (const d of last.depths.filter((x) => x.depth >= 2)) {
    out.push(
      `last run, depth ${d.depth} (${d.passes} iterations): ${d.allNodesPerPass.toFixed(0)} node executions, ${ms(d.nodeUsPerPass)} ms node time ` +
        `against ${ms(d.wallUsPerPass)} ms wall per iteration (${((100 * d.nodeUsPerPass) / Math.max(d.wallUsPerPass, 1)).toFixed(0)} %; ` +
        `${(d.nodeUsPerPass / Math.max(d.allNodesPerPass, 1)).toFixed(1)} µs per node)`,
    );
  }
  out.push('');
  out.push('executor passes by depth (1 = main graph, 2 = Loop body in it, e.g. one optimizer step; 3 = Loop body in that, e.g. one micro-batch):');
  const drows: string[][] = [['run', 'depth', 'passes', 'own nodes/pass', 'all nodes/pass', 'wall ms/pass', 'node ms/pass']];
  stats.forEach((s, i) => {
    for (const d of s.depths) drows.push([String(i + 1), String(d.depth), String(d.passes), d.ownNodesPerPass.toFixed(1), d.allNodesPerPass.toFixed(1), ms(d.wallUsPerPass), ms(d.nodeUsPerPass)]);
  });
  out.push(...table(drows, ['r', 'r', 'r', 'r', 'r', 'r', 'r']));
  if (!full) return out;

  const chosen = stats.length > 1 ? stats.slice(1) : stats;
  const leaves = chosen.flatMap((s) => s.leaves);
  const totalUs = leaves.reduce((a, l) => a + l.ev.dur, 0);
  const which = stats.length > 1 ? `runs 2..${stats.length}` : 'run 1';
  out.push('');
  out.push(`top ${top} op types by total node time (${which}; ${ms(totalUs)} ms, ${leaves.length} node executions):`);
  const ops = aggregate(leaves, (l) => `${l.op}\u0000${String(l.ev.args?.provider ?? '?')}`);
  const orows: string[][] = [['op', 'provider', 'count', 'total ms', 'mean µs', 'share']];
  for (const a of ops.slice(0, top)) orows.push([a.op, a.provider, String(a.count), ms(a.totalUs), (a.totalUs / a.count).toFixed(1), `${((100 * a.totalUs) / Math.max(totalUs, 1)).toFixed(1)} %`]);
  out.push(...table(orows, ['l', 'l', 'r', 'r', 'r', 'r']));
  out.push('');
  out.push(`top ${top} single nodes by total time (${which}; a Loop-body node counts once per iteration):`);
  const nodes = aggregate(leaves, (l) => l.ev.name.replace(/_kernel_time$/, ''));
  const nrows: string[][] = [['node', 'op', 'count', 'total ms', 'mean µs', 'share']];
  for (const a of nodes.slice(0, top)) nrows.push([a.key.length > 60 ? `${a.key.slice(0, 57)}...` : a.key, a.op, String(a.count), ms(a.totalUs), (a.totalUs / a.count).toFixed(1), `${((100 * a.totalUs) / Math.max(totalUs, 1)).toFixed(1)} %`]);
  out.push(...table(nrows, ['l', 'l', 'r', 'r', 'r', 'r']));
  if (gpuKernels.length > 0) {
    const gk = aggregate(
      gpuKernels.map((ev) => ({ ev, kind: 'other' as const, op: ev.name, children: [], depth: 0 })),
      (s) => s.ev.name,
    );
    const gt = gk.reduce((a, k) => a + k.totalUs, 0);
    out.push('');
    out.push(`device kernels (cat "Kernel", CUPTI): ${gpuKernels.length} launches, ${ms(gt)} ms; top ${Math.min(top, gk.length)}:`);
    const krows: string[][] = [['kernel', 'count', 'total ms', 'mean µs']];
    for (const k of gk.slice(0, top)) krows.push([k.key.length > 60 ? `${k.key.slice(0, 57)}...` : k.key, String(k.count), ms(k.totalUs), (k.totalUs / k.count).toFixed(1)]);
    out.push(...table(krows, ['l', 'r', 'r', 'r']));
  }
  return out;
}

/** Trace files named by the arguments (a folder stands for the .json files in it). */
function traceFiles(args: string[]): string[] {
  const files: string[] = [];
  for (const a of args) {
    if (!fs.existsSync(a)) throw new Error(`${a}: no such file or folder`);
    if (fs.statSync(a).isDirectory()) {
      for (const f of fs.readdirSync(a).sort()) if (f.endsWith('.json')) files.push(path.join(a, f));
    } else files.push(a);
  }
  return files;
}

function main(): void {
  const { values, positionals } = parseArgs({ allowPositionals: true, options: { top: { type: 'string', default: '25' }, all: { type: 'boolean', default: false } } });
  const top = Number(values.top);
  if (!(Number.isInteger(top) && top > 0)) throw new Error(`--top must be a positive integer, got ${values.top}`);
  if (positionals.length === 0) throw new Error('usage: ort-profile.ts <trace.json | folder>... [--top 25] [--all]');
  const files = traceFiles(positionals);
  if (files.length === 0) throw new Error(`no .json trace files in ${positionals.join(', ')}`);
  const traces = files.map((f) => {
    const { events, note } = readTrace(f);
    const nodeUs = events.filter((e) => e.cat === 'Node').reduce((a, e) => a + e.dur, 0);
    return { f, events, note, nodeUs };
  });
  const largest = traces.reduce((a, b) => (b.nodeUs > a.nodeUs ? b : a));
  // The largest first: it is the one the full tables are printed for.
  for (const t of [largest, ...traces.filter((t) => t !== largest)]) {
    if (t.note) console.log(`${path.basename(t.f)}: ${t.note}`);
    for (const l of summarise(t.f, t.events, top, values.all || t === largest)) console.log(l);
    console.log('');
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === path.resolve(__filename)) {
  try {
    main();
  } catch (e) {
    console.error(`error: ${(e as Error).message}`);
    process.exit(1);
  }
}
