// Helpers of the browser tests: the test page bundled by esbuild, a server
// on loopback that serves it and mints its tokens, and Debian's chromium
// driven headless by playwright-core (nothing is downloaded at test time).
import { createServer } from "node:http";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";
import { chromium } from "playwright-core";

import { root, token } from "../support.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const clientDir = join(root, "clients", "typescript");

// The browser: Debian's chromium (scripts/setup installs it), or another
// named by OASYNC_CHROMIUM. A browser that does not start fails the tests.
export const chromiumPath = process.env.OASYNC_CHROMIUM ?? "/usr/bin/chromium";

export async function launchBrowser() {
  try {
    return await chromium.launch({
      executablePath: chromiumPath,
      headless: true,
      // Root has no sandbox; /dev/shm may be small in containers.
      args: ["--no-sandbox", "--disable-dev-shm-usage"],
      timeout: 60000,
    });
  } catch (e) {
    throw new Error(`chromium (${chromiumPath}) did not start; scripts/setup installs it: ${e.message}`);
  }
}

// Where each React the page is bundled with resolves: 19 where the client's
// packages do (clients/typescript's node_modules, which scripts/setup fills),
// as the client pins it; 18, the oldest its peer dependency allows, from
// tests/e2e's node_modules.
const reactDirs = { 19: clientDir, 18: join(here, "..") };

// The page's packages resolve where the client's do, so that the page and
// the client share one React and one phoenix; react and react-dom (and their
// subpaths) from reactDirs[react].
function sharedPackages(react) {
  return {
    name: "shared-packages",
    setup(b) {
      b.onResolve({ filter: /^(react|react-dom|phoenix|@bufbuild\/protobuf)(\/.*)?$/ }, (args) => {
        if (args.pluginData === "shared") return undefined;
        const dir = /^react(-dom)?(\/|$)/.test(args.path) ? reactDirs[react] : clientDir;
        return b.resolve(args.path, { kind: args.kind, resolveDir: dir, pluginData: "shared" });
      });
    },
  };
}

const bundled = {};

// The page's script with React `react` (19 or 18): page/main.jsx and the
// client's TypeScript sources, in one ES module (built once per process).
export function pageScript(react = 19) {
  bundled[react] ??= build({
    entryPoints: [join(here, "page", "main.jsx")],
    bundle: true,
    write: false,
    format: "esm",
    platform: "browser",
    target: "es2022",
    jsx: "automatic",
    define: { "process.env.NODE_ENV": '"production"' },
    logLevel: "silent",
    plugins: [sharedPackages(react)],
  }).then(
    (r) => r.outputFiles[0].text,
    (e) => {
      throw new Error(`the test page did not bundle with React ${react} ` +
        `(clients/typescript and tests/e2e need npm ci; scripts/setup runs it): ${e.message}`);
    },
  );
  return bundled[react];
}

// The page, loading `script`.
const html = (script) => `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>oasync client</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #1d232a; }
  header { margin-bottom: 12px; }
  main { display: flex; gap: 12px; align-items: flex-start; }
  .topic { box-sizing: border-box; width: 376px; border: 1px solid #d0d7de; padding: 8px 12px; }
  h2 { font-size: 14px; margin: 0 0 6px; }
  .status { border-radius: 10px; padding: 1px 8px; background: #eee; font-weight: normal; }
  .status.live { background: #d2f4dc; } .status.refused, .status.unauthorized { background: #ffd8d8; }
  .status.resyncing, .status.catching_up { background: #fff1c2; }
  ul { list-style: none; padding: 0; margin: 0; } li { padding: 1px 0; font-size: 12px; }
  .version { color: #57606a; } .value { color: #0a3069; }
</style></head>
<body><div id="root"></div><script type="module" src="${script}"></script></body></html>
`;

// The page's server on loopback: / (the page; with ?react=18, the one that
// loads /main18.js), /main.js (the page's script with React 19), /main18.js
// (with React 18), and /token?user=U&org=O&session=S, an HS256 token of
// `keys` for that identity, its scopes those of `scopes` (settable).
export async function pageServer(keys, { scopes }) {
  const [main19, main18] = await Promise.all([pageScript(19), pageScript(18)]);
  const scripts = { "/main.js": main19, "/main18.js": main18 };
  const state = { scopes, minted: 0 };
  const server = createServer((req, res) => {
    const url = new URL(req.url, "http://127.0.0.1");
    if (url.pathname === "/") {
      const script = url.searchParams.get("react") === "18" ? "/main18.js" : "/main.js";
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html(script));
    } else if (Object.hasOwn(scripts, url.pathname)) {
      res.writeHead(200, { "content-type": "text/javascript; charset=utf-8" }).end(scripts[url.pathname]);
    } else if (url.pathname === "/token") {
      state.minted += 1;
      const q = url.searchParams;
      const jwt = token(keys, {
        sub: q.get("user"),
        org_id: q.get("org"),
        session_id: q.get("session"),
        scopes: state.scopes,
      });
      res.writeHead(200, { "content-type": "text/plain", "cache-control": "no-store" }).end(jwt);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${server.address().port}`;
  return {
    origin,
    state,
    // The page's URL, for the server at `serverBase` and these settings
    // (`react`: 19 or 18, the React the page runs).
    url: (serverBase, topics, { user = "user-1", org = "1", session = "session-1", record = true, react = 19 } = {}) => {
      const query = { server: serverBase, topics: topics.join(","), user, org, session, record: record ? "1" : "0", react };
      return `${origin}/?${new URLSearchParams(query)}`;
    },
    close: () => {
      server.closeAllConnections();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}
