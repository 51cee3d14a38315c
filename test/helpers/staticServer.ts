/**
 * A static-file HTTP server on 127.0.0.1 for the download tests (models, hub datasets, `sft download`).
 * A route function maps each request's decoded URL path to bytes, a file, a JSON document or a redirect;
 * anything else is a 404 "not found". `Range: bytes=N-` gets 206 with the rest (416 from the end on);
 * every request is logged in `requests`; `cutOnce(urlPath, n)` makes the next response for that path stop
 * after n body bytes and drop the connection (an interrupted download).
 */
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import type { AddressInfo } from 'node:net';

export type Served = Buffer | { file: string } | { json: unknown } | { redirect: string };
export type Route = (urlPath: string) => Served | undefined;

export interface StaticServer {
  /** `http://127.0.0.1:<port>` (what HF_ENDPOINT is set to). */
  base: string;
  requests: { url: string; range?: string }[];
  cutOnce(urlPath: string, bytes: number): void;
  close(): Promise<void>;
}

/** The file `name` of `dir` (undefined, a 404, when there is none). */
export function fileIn(dir: string, name: string): Served | undefined {
  const p = path.join(dir, name);
  return name !== '' && fs.existsSync(p) && fs.statSync(p).isFile() ? { file: p } : undefined;
}

/** Serves the files of `dir` at `/<repo>/resolve/<revision>/<file>`, as the hub does. */
export function hubFiles(repo: string, dir: string): Route {
  const head = `/${repo}/resolve/`;
  return (url) => (url.startsWith(head) ? fileIn(dir, url.slice(head.length).split('/').slice(1).join('/')) : undefined);
}

export async function startStaticServer(route: Route): Promise<StaticServer> {
  const requests: StaticServer['requests'] = [];
  const cuts = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(req.url ?? '');
    requests.push({ url, range: req.headers.range });
    const served = route(url);
    if (served === undefined) {
      res.writeHead(404);
      res.end('not found');
      return;
    }
    if (!Buffer.isBuffer(served) && 'redirect' in served) {
      res.writeHead(302, { location: served.redirect });
      res.end();
      return;
    }
    const isJson = !Buffer.isBuffer(served) && 'json' in served;
    const body = Buffer.isBuffer(served) ? served : 'file' in served ? fs.readFileSync(served.file) : Buffer.from(JSON.stringify(served.json));
    const type = isJson ? { 'content-type': 'application/json' } : {};
    const range = /^bytes=(\d+)-$/.exec(req.headers.range ?? '');
    const start = range ? Number(range[1]) : 0;
    if (range && start >= body.length) {
      res.writeHead(416, { 'content-range': `bytes */${body.length}` });
      res.end();
      return;
    }
    if (range) res.writeHead(206, { ...type, 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
    else res.writeHead(200, { ...type, 'content-length': body.length });
    const cut = cuts.get(url);
    if (cut !== undefined) {
      cuts.delete(url);
      res.write(body.subarray(start, start + cut), () => res.destroy());
      return;
    }
    res.end(body.subarray(start));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    base: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    cutOnce: (urlPath, bytes) => void cuts.set(urlPath, bytes),
    close: () =>
      new Promise<void>((r) => {
        server.close(() => r());
        server.closeAllConnections();
      }),
  };
}

/** A local port nothing listens on (a server is opened there and closed again): "offline" for a test. */
export async function closedPort(): Promise<number> {
  const probe = http.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
  const port = (probe.address() as AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  return port;
}
