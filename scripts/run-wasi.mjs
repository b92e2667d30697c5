#!/usr/bin/env -S node --no-warnings --single-threaded
// Runs a wasm32-wasip1 program under Node's WASI, in V8 (the wasm engine Envoy embeds). Cargo uses
// it as the runner for wasm32-wasip1 (.cargo/config.toml), so `cargo wasm-test` runs the filters'
// unit tests, libtest and all, as wasm.
// Usage: scripts/run-wasi.mjs program.wasm [args...]
//
// --single-threaded: Node 20 sometimes crashes (SIGSEGV) at exit after running a large module
// (token-counter's tests, 13 MB with the BPE tables) while V8 still compiles it on background
// threads; compiling on the main thread never did in our runs and costs nothing measurable here.
//
// A test binary links the filter's proxy-wasm glue too, and with it imports of the proxy-wasm ABI
// (`env.proxy_*`) that no unit test calls. They are bound to functions that throw, so a pure
// module that reached for the host would fail its test instead of passing silently.
import { readFile } from 'node:fs/promises';
import { argv, exit } from 'node:process';
import { WASI } from 'node:wasi';

const wasi = new WASI({ version: 'preview1', args: argv.slice(2), env: {}, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(argv[2]));
const imports = wasi.getImportObject();
for (const { module: from, name, kind } of WebAssembly.Module.imports(module)) {
  if (kind !== 'function' || imports[from]?.[name]) continue;
  imports[from] ??= {};
  imports[from][name] = () => {
    throw new Error(`host call ${from}.${name} in a unit test: pure code must not call the host`);
  };
}
const instance = await WebAssembly.instantiate(module, imports);
exit(wasi.start(instance));
