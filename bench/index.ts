/**
 * `npm run bench -- <name> [args...]`: runs bench/<name>.ts's exported run(args). Benches are
 * slow and load the machine, so with no name nothing runs: the list is printed instead.
 */
import { pathToFileURL } from 'node:url';
import { join } from 'node:path';

const BENCHES: Record<string, string> = {
  startup: 'flm-grow --version, --help, inspect --json, plan --json vs node -e 0 (--runs N)',
  read: 'checkpoint read throughput vs cat, peak RSS (--gb N)',
  forward: 'forward tokens/s and GFLOP/s vs the backend matMul roofline; streamed peak RSS vs one layer',
  grow: 'grow a few-GB checkpoint vs cp -r of the same bytes, peak RSS at two depths (--gb N)',
  train: 'training tokens/s and achieved FLOP/s (6·params·tokens) vs the matMul roofline',
  msg: "MSG claim: FLOPs for small→grown to reach a from-scratch run's final loss",
  distributed: 'torch engine layouts on CPU (1 process, DDP 2, FSDP2 2, TP 2, FSDP x TP 2 x 2): peak RSS per rank, tokens/s',
  'save-stall': 'torch engine: how long a checkpoint save holds up training, --sharded-save vs --async-save (FSDP2 on CPU)',
  engines: "tfjs trainer vs torch engine on one ~20 M model: tokens/s, FLOP/s vs each one's matMul peak",
  strategies: 'issue 14: growth strategies (width/depth operators, modes) vs from scratch at equal FLOPs, over seeds',
  'plan-memory': "plan's peak-memory estimate vs grow's measured peak RSS, explicit and distance placement (<1 GB)",
  faults:
    'issue-16 fault sweep: kills, OS errors, special files, absurd sizes, 200 fuzzed shards (--kills N --fuzz N --jobs N --only group)',
  drift: 'finished pipeline runs (tfjs, torch, torch f64, ...) compared step by step: where losses part (issue 11)',
  scale: 'Tele-FLM full-width rehearsals: synth, grow vs cp, verify, extrapolation (tens of GB)',
  passes:
    'issue 25: select-layers distances, verify, forward at 52B / 1T widths, tfjs vs torch engine: time, ratio, peak RSS vs estimate',
};

function usage(): string {
  const lines = Object.entries(BENCHES).map(([n, d]) => `  ${n.padEnd(8)} ${d}`);
  return `usage: npm run bench -- <name> [args...]\n\nbenches:\n${lines.join('\n')}\n`;
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === 'all' || name === '--help' || name === '-h') {
    process.stdout.write(usage());
    process.stdout.write('\nno bench run: name one (they are long and load the machine, so "all" only lists them).\n');
    return 0;
  }
  if (!Object.hasOwn(BENCHES, name)) {
    process.stderr.write(`bench: unknown bench "${name}"\n\n${usage()}`);
    return 2;
  }
  // run may return an exit code (e.g. 2 for bad arguments, after printing why)
  let mod: { run?: (args: string[]) => Promise<void | number> | void | number };
  try {
    mod = (await import(pathToFileURL(join(import.meta.dirname, `${name}.ts`)).href)) as typeof mod;
  } catch (e) {
    if ((e as { code?: string }).code === 'ERR_MODULE_NOT_FOUND' && String((e as Error).message).includes(`${name}.ts`)) {
      process.stderr.write(`bench: bench/${name}.ts does not exist yet\n`);
      return 2;
    }
    throw e;
  }
  if (typeof mod.run !== 'function') {
    process.stderr.write(`bench: bench/${name}.ts does not export run(args)\n`);
    return 2;
  }
  const code = await mod.run(rest);
  return typeof code === 'number' ? code : 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`bench: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    process.exitCode = 1;
  },
);
