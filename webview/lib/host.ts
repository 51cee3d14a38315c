/**
 * The webview side of the host channel: `acquireVsCodeApi` once, typed posts, and incoming messages
 * validated with the panel's parser from protocol/webview.ts (malformed ones are dropped with a console
 * warning). State that must survive hide/show goes through getState/setState.
 */
interface VsCodeApi {
  postMessage(m: unknown): void;
  getState(): unknown;
  setState(s: unknown): void;
}
declare function acquireVsCodeApi(): VsCodeApi;

type Parser<M> = { parse(v: unknown): { ok: true; message: M } | { ok: false; error: string } };

const api: VsCodeApi = acquireVsCodeApi();

export function connect<In extends { type: string }, Out extends { type: string }>(parser: Parser<In>, onMessage: (m: In) => void) {
  window.addEventListener('message', (ev: MessageEvent) => {
    const r = parser.parse(ev.data);
    if (!r.ok) {
      console.warn(`rejected host message: ${r.error}`);
      return;
    }
    onMessage(r.message);
  });
  return {
    post(m: Out): void {
      api.postMessage(m);
    },
    getState<S>(): S | undefined {
      return (api.getState() as S | null) ?? undefined;
    },
    setState<S>(s: S): void {
      api.setState(s);
    },
  };
}
