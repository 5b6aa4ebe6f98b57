#!/usr/bin/env node
// Entry point: the compiled CLI lives in dist/ (npm run build).
import('../dist/src/cli.js').then((m) => m.main(process.argv)).catch((err) => {
  process.stderr.write(`kerntap: ${err && err.message ? err.message : String(err)}\n`);
  process.exit(1);
});
