/**
 * `sft chat --model DIR [--system TEXT] [--prompt TEXT] [--temperature 0.7 --top_p 0.9 --top_k 50
 *  --repetition_penalty 1 --max_new_tokens 150 --seed N] [--device cpu|cuda] [--raw] [--json]`
 * With --prompt: one answer, streamed to stdout (--json: then one line {"text","seed","new_tokens",
 * "stop_reason","tokens_per_second"}). Without: an interactive chat on stdin/stdout, history kept and
 * rendered with the chat template; `quit`, `exit` or end of input leaves; piped stdin works (one user
 * message per line); Ctrl-C stops the answer being written. Base models (no role tokens) get the raw message,
 * without history.
 */
import { createInterface } from 'node:readline';
import type { Command } from '../command';
import { parseOptions, required } from '../command';
import { chatWith, openInferenceModel, type ChatReply } from '../../infer/service';
import type { ChatMessage } from '../../infer/chatFormat';
import { deviceArg, println, processIO, SAMPLING_OPTIONS, samplingArgs, type CommandIO } from '../../infer/cliSupport';

const USAGE =
  'sft chat --model DIR [--system TEXT] [--prompt TEXT] [--temperature 0.7] [--top_p 0.9] [--top_k 50] [--repetition_penalty 1.0] [--max_new_tokens 150] [--seed N] [--device cpu|cuda] [--raw] [--json]';

export async function runChat(argv: string[], io: CommandIO = processIO()): Promise<number> {
  const { values } = parseOptions(
    argv,
    { model: { type: 'string' }, system: { type: 'string' }, prompt: { type: 'string' }, raw: { type: 'boolean' }, json: { type: 'boolean' }, ...SAMPLING_OPTIONS },
    USAGE,
  );
  const dir = required(values.model, 'model', USAGE);
  const s = samplingArgs(values, { temperature: 0.7, top_p: 0.9, top_k: 50, max_new_tokens: 150 });
  const m = await openInferenceModel(dir, deviceArg(values.device));
  const mode = values.raw ? 'raw' : m.defaultMode;
  const baseSeed = s.seed ?? Math.floor(Math.random() * 2 ** 31);
  const ask = (messages: ChatMessage[], turn: number, signal?: AbortSignal): Promise<ChatReply> =>
    chatWith(m, {
      messages,
      system: values.system,
      mode,
      temperature: s.temperature,
      top_p: s.top_p,
      top_k: s.top_k,
      repetition_penalty: s.repetition_penalty,
      max_new_tokens: s.max_new_tokens,
      seed: baseSeed + turn,
      signal,
      onToken: (t) => io.stdout.write(t),
    });

  if (values.prompt !== undefined) {
    const r = await ask([{ role: 'user', content: values.prompt }], 0);
    println(io.stdout);
    if (values.json) {
      println(io.stdout, JSON.stringify({ text: r.text, seed: r.seed, mode: r.mode, prompt_tokens: r.promptTokens, new_tokens: r.newTokens, stop_reason: r.stopReason, first_token_ms: round(r.firstTokenMs), tokens_per_second: round(r.tokensPerSecond) }));
    }
    return 0;
  }

  const interactive = Boolean(io.stdin.isTTY);
  if (interactive) {
    println(io.stdout, `Chatting with ${m.dir} (${mode === 'chat' ? 'chat template' : 'base model, raw prompts'}, seed ${baseSeed}). Type "quit" to leave.`);
  }
  const history: ChatMessage[] = [];
  const rl = createInterface({ input: io.stdin, terminal: false });
  const lines = rl[Symbol.asyncIterator]();
  let turn = 0;
  try {
    for (;;) {
      if (interactive) io.stdout.write('\nYou: ');
      const next = await lines.next();
      if (next.done) break;
      const text = String(next.value).trim();
      if (['quit', 'exit', 'q'].includes(text.toLowerCase())) break;
      if (!text) continue;
      const messages: ChatMessage[] = mode === 'chat' ? [...history, { role: 'user', content: text }] : [{ role: 'user', content: text }];
      io.stdout.write('Assistant: ');
      // Ctrl-C while the model is answering stops that answer only (interactive terminals).
      const ac = new AbortController();
      const onSigint = () => ac.abort();
      if (interactive) process.once('SIGINT', onSigint);
      let r: ChatReply;
      try {
        r = await ask(messages, turn++, ac.signal);
      } finally {
        process.removeListener('SIGINT', onSigint);
      }
      println(io.stdout, r.stopReason === 'aborted' ? ' [stopped]' : '');
      if (mode === 'chat') history.push({ role: 'user', content: text }, { role: 'assistant', content: r.text });
    }
  } finally {
    rl.close(); // an error mid-chat must not leave stdin open: the process would wait on it instead of exiting
  }
  return 0;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

export const command: Command = {
  name: 'chat',
  summary: 'Chat with a model or checkpoint (one answer with --prompt, else interactive)',
  usage: USAGE,
  run: (argv) => runChat(argv),
};
