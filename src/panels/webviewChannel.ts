/**
 * One typed, validated channel to a webview (panel or sidebar view): sets the options (scripts on,
 * localResourceRoots = media/ only), renders the CSP shell with a fresh nonce, validates every incoming
 * message with the panel's parser from protocol/webview.ts (rejected ones are logged, never acted on),
 * and holds outgoing posts until the webview says `ready` (again after each hide/show reload).
 */
import * as vscode from 'vscode';
import { makeNonce, webviewHtml } from '../webviewHtml';

type Parser<M> = { parse(v: unknown): { ok: true; message: M } | { ok: false; error: string } };

export class WebviewChannel<In extends { type: string }, Out extends { type: string }> implements vscode.Disposable {
  private ready = false;
  private disposed = false;
  private queue: Out[] = [];
  private readonly subs: vscode.Disposable[] = [];

  constructor(
    private readonly webview: vscode.Webview,
    extensionUri: vscode.Uri,
    panel: string,
    title: string,
    parser: Parser<In>,
    private readonly log: (line: string) => void,
    onMessage: (m: In) => void | Promise<void>,
  ) {
    webview.options = { enableScripts: true, localResourceRoots: [vscode.Uri.joinPath(extensionUri, 'media')] };
    const media = (...p: string[]) => webview.asWebviewUri(vscode.Uri.joinPath(extensionUri, 'media', ...p)).toString();
    webview.html = webviewHtml({
      cspSource: webview.cspSource,
      nonce: makeNonce(),
      title,
      styleUri: media('style.css'),
      scriptUri: media('dist', `${panel}.js`),
      panel,
    });
    this.subs.push(
      webview.onDidReceiveMessage(async (raw: unknown) => {
        const r = parser.parse(raw);
        if (!r.ok) {
          this.log(`[webview ${panel}] rejected message: ${r.error}`);
          return;
        }
        if (r.message.type === 'ready') {
          this.ready = true;
          const q = this.queue;
          this.queue = [];
          for (const m of q) void this.webview.postMessage(m);
        }
        try {
          await onMessage(r.message);
        } catch (e) {
          this.log(`[webview ${panel}] handling ${r.message.type} failed: ${(e as Error).message}`);
        }
      }),
    );
  }

  /** The webview was hidden and will reload its document when shown: posts wait for its next `ready`. */
  reset(): void {
    this.ready = false;
  }

  /** Sends now, or when the webview is ready; a no-op once disposed (a reply arriving after the view closed). */
  post(m: Out): void {
    if (this.disposed) return;
    if (this.ready) void this.webview.postMessage(m);
    else this.queue.push(m);
  }

  /** Replaces queued messages of the same type (state snapshots) instead of piling them up. */
  postLatest(m: Out): void {
    if (!this.ready) this.queue = this.queue.filter((q) => q.type !== m.type);
    this.post(m);
  }

  dispose(): void {
    this.disposed = true;
    this.queue = [];
    for (const s of this.subs) s.dispose();
  }
}

/** What a panel's webview is: its view type, tab title, bundle name (media/dist/<panel>.js) and document title. */
export interface ChannelPanelSpec<In> {
  viewType: string;
  tabTitle: string;
  panel: string;
  title: string;
  parser: Parser<In>;
  retainContextWhenHidden: boolean;
}

/**
 * An editor-tab webview panel (the extension's icon, media/ as its only resource root) with its channel,
 * logging to the runner's output channel. The returned disposables are the channel, the panel's close →
 * `onDispose`, and, unless the context is retained while hidden, a channel reset each time the panel is
 * hidden (its document reloads when shown).
 */
export function openChannelPanel<In extends { type: string }, Out extends { type: string }>(
  ctx: { extensionUri: vscode.Uri; runner: { output: { appendLine(line: string): void } } },
  spec: ChannelPanelSpec<In>,
  onMessage: (m: In) => void | Promise<void>,
  onDispose: () => void,
): { panel: vscode.WebviewPanel; channel: WebviewChannel<In, Out>; disposables: vscode.Disposable[] } {
  const panel = vscode.window.createWebviewPanel(spec.viewType, spec.tabTitle, vscode.ViewColumn.Active, {
    enableScripts: true,
    retainContextWhenHidden: spec.retainContextWhenHidden,
    localResourceRoots: [vscode.Uri.joinPath(ctx.extensionUri, 'media')],
  });
  panel.iconPath = vscode.Uri.joinPath(ctx.extensionUri, 'media', 'sft.svg');
  const channel = new WebviewChannel<In, Out>(panel.webview, ctx.extensionUri, spec.panel, spec.title, spec.parser, (l) => ctx.runner.output.appendLine(l), onMessage);
  const disposables: vscode.Disposable[] = [channel, panel.onDidDispose(onDispose)];
  if (!spec.retainContextWhenHidden) {
    disposables.push(
      panel.onDidChangeViewState((e) => {
        if (!e.webviewPanel.visible) channel.reset();
      }),
    );
  }
  return { panel, channel, disposables };
}
