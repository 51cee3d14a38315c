/**
 * The HTML shell of every webview: a strict Content-Security-Policy (`default-src 'none'`, scripts only
 * with this render's nonce, styles/images/fonts only from the webview's own resource origin), the shared
 * stylesheet and the panel's bundle from media/. Plain; the host passes in `webview.cspSource` and URIs.
 */
import { randomBytes } from 'node:crypto';

export function makeNonce(): string {
  return randomBytes(18).toString('base64').replace(/[^A-Za-z0-9]/g, 'x');
}

export function contentSecurityPolicy(cspSource: string, nonce: string): string {
  return [
    "default-src 'none'",
    `img-src ${cspSource} data:`,
    `style-src ${cspSource}`,
    `font-src ${cspSource}`,
    `script-src 'nonce-${nonce}'`,
  ].join('; ');
}

function escapeAttr(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

export interface WebviewPage {
  cspSource: string;
  nonce: string;
  title: string;
  styleUri: string;
  scriptUri: string;
  /** Panel id: becomes `<body data-panel>`; the bundle builds the DOM itself. */
  panel: string;
}

export function webviewHtml(p: WebviewPage): string {
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="UTF-8">
<meta http-equiv="Content-Security-Policy" content="${escapeAttr(contentSecurityPolicy(p.cspSource, p.nonce))}">
<meta name="viewport" content="width=device-width, initial-scale=1.0">
<link rel="stylesheet" href="${escapeAttr(p.styleUri)}">
<title>${escapeAttr(p.title)}</title>
</head>
<body data-panel="${escapeAttr(p.panel)}">
<div id="app"></div>
<script nonce="${escapeAttr(p.nonce)}" src="${escapeAttr(p.scriptUri)}"></script>
</body>
</html>`;
}
