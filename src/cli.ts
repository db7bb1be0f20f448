/**
 * The flm-grow command line. Each command lives in src/commands/<name>.ts; this file only wires
 * them up and turns our typed errors into a one-line message and a non-zero exit code.
 *
 * Start-up is kept short: `--version` loads nothing but this file; a command line loads yargs and
 * the module of the command it names, not the other commands' (the top-level --help none); and a
 * command's definition loads no library code (its handler imports what it needs when it runs).
 */
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { FlmGrowError } from './util/errors.ts';
import { describeOsError } from './util/os-errors.ts';
import type { CommandModule } from 'yargs';

const require = createRequire(import.meta.url);

function packageVersion(): string {
  // src/cli.ts and dist/cli.js both sit one folder below package.json
  return (JSON.parse(readFileSync(join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string }).version;
}

function resolvable(pkg: string): boolean {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
}

/**
 * `--version`: the version, the tfjs backend `--backend auto` picks, the Python the torch engine
 * runs (engines/torch-process.ts; its probe imports torch, a second or more, so a found interpreter is
 * cached on disk) and the training engine `--engine auto` picks.
 */
async function versionText(): Promise<string> {
  const backend = resolvable('@tensorflow/tfjs-node-gpu')
    ? 'tensorflow (@tensorflow/tfjs-node-gpu)'
    : 'wasm (@tensorflow/tfjs-backend-wasm; @tensorflow/tfjs-node-gpu not installed)';
  const { findTorchPython, NO_TORCH_HELP } = await import('./engines/torch-process.ts');
  const t = findTorchPython();
  const torch =
    t === undefined ? `none: ${NO_TORCH_HELP}` : `${t.python} (torch ${t.torchVersion}, ${t.cuda ? 'CUDA' : 'CPU only'})`;
  const engine =
    t?.cuda === true
      ? 'torch (a CUDA GPU is visible to torch)'
      : t === undefined
        ? 'tfjs (no Python with torch)'
        : 'tfjs, or torch when tfjs cannot hold the model (no CUDA GPU)';
  return `flm-grow ${packageVersion()}\nbackend (--backend auto): ${backend}\ntorch engine (--engine torch): ${torch}\nengine (train --engine auto): ${engine}\n`;
}

export async function main(argv: string[]): Promise<void> {
  if (argv.length === 1 && (argv[0] === '--version' || argv[0] === '-V')) {
    process.stdout.write(await versionText());
    return;
  }
  // `flm-grow`, `flm-grow help` and `flm-grow help <command>` print the help, as -h and --help do
  if (argv.length === 0) argv = ['--help'];
  else if (argv[0] === 'help') argv = [...argv.slice(1), '--help'];
  const helpAsked = argv.some((x) => x === '--help' || x === '-h');
  const { COMMANDS, COMMAND_NAMES } = await import('./commands/index.ts');
  const { suggest } = await import('./commands/options.ts');
  const first = argv.find((x) => !x.startsWith('-'));
  if (first !== undefined && argv[0] === first && !COMMAND_NAMES.includes(first)) {
    const s = suggest(first, COMMAND_NAMES);
    throw new FlmGrowError(
      'UsageError',
      `unknown command "${first}"${s.length > 0 ? `; did you mean ${s.map((x) => `"${x}"`).join(' or ')}?` : ''} (commands: ${COMMAND_NAMES.join(', ')})`,
    );
  }
  // yargs runs (or shows the help of) a command only when an argument is its name, so the modules
  // of the commands named anywhere in argv are all it can need; the others are registered by
  // their usage line and description, which is all the top-level --help lists of them.
  const named = (c: { command: string }) => argv.includes(c.command.split(' ')[0]);
  const [{ default: yargs }, ...loaded] = await Promise.all([
    import('yargs'),
    ...COMMANDS.map((c) => (named(c) ? c.load() : undefined)),
  ]);
  // Examples are printed by us, one whole command per line (yargs would wrap a long one in the
  // middle, and a wrapped command cannot be copied): each builder's .example() calls are recorded.
  const examples: [string, string][] = [];
  const recordExamples = (m: CommandModule<any, any>): CommandModule<any, any> => {
    const b = m.builder;
    if (typeof b !== 'function') return m;
    return {
      ...m,
      builder: ((y: any) => {
        y.example = (cmd: string, desc?: string) => {
          examples.push([cmd, desc ?? '']);
          return y;
        };
        return b(y);
      }) as CommandModule<any, any>['builder'],
    };
  };
  const commands: CommandModule<any, any>[] = COMMANDS.map(
    (c, i) =>
      (loaded[i] === undefined ? undefined : recordExamples(loaded[i])) ?? {
        command: c.command,
        describe: c.describe,
        handler: () => {
          throw new Error(`command "${c.command}" ran without its module`);
        },
      },
  );
  // With help asked for, yargs renders it from the arguments without the help flag (getHelp
  // below): it runs the named command's builder, no handler and no validation.
  let cli = yargs(helpAsked ? argv.filter((x) => x !== '--help' && x !== '-h') : argv)
    .scriptName('flm-grow')
    .usage('$0 <command> [options]\n\nGrow Llama / Tele-FLM checkpoints function-preservingly (Masked Structural Growth).')
    .strict()
    .demandCommand(1, 'Name a command (see --help).')
    .version(false)
    .option('version', {
      type: 'boolean',
      describe: 'show the version, the tfjs backend and the training engine flm-grow would use',
    })
    .help()
    .alias('h', 'help')
    .epilog('Options mean the same in every command; docs/cli.md lists them and their growth-plan / pipeline JSON keys.')
    .wrap(Math.min(120, process.stdout.columns ?? 120))
    .fail((msg, err) => {
      // yargs wraps what a coerce function throws (our "expected a number, got ...") in a YError
      if (err instanceof Error && err.name === 'YError') throw new FlmGrowError('UsageError', err.message);
      if (err !== undefined && err !== null) throw err;
      throw new FlmGrowError('UsageError', withSuggestions(msg, optionNames(first, commands, yargs), suggest));
    });
  for (const c of commands) cli = cli.command(c);
  // A Hub id given where a checkpoint folder goes (`inspect meta-llama/Llama-3.2-1B`) is read from
  // its snapshot in the local HF cache when there is one; otherwise the command's own "no such
  // folder" error says how to download it (checkpoint/locate.ts)
  cli = cli.middleware(async (a: Record<string, unknown>) => {
    const { looksLikeHubId, cachedSnapshot } = await import('./checkpoint/locate.ts');
    for (const k of ['checkpoint', 'source', 'grown']) {
      const v = a[k];
      if (typeof v !== 'string' || !looksLikeHubId(v)) continue;
      const snap = cachedSnapshot(v);
      if (snap === undefined) continue;
      a[k] = snap;
      if (a.quiet !== true) process.stderr.write(`flm-grow: ${v}: the Hugging Face cache snapshot ${snap}\n`);
    }
  });
  if (!helpAsked) {
    await cli.parseAsync();
    return;
  }
  const text = await cli.getHelp();
  if (first === undefined || first === 'help')
    examples.push(
      ['$0 inspect fixtures/hf/llama-tiny-f32', 'summarise a checkpoint'],
      ['$0 grow --help', 'every option of one command, with examples'],
    );
  process.stdout.write(text + '\n' + formatExamples(examples));
}

/** "Examples:", then each description and below it its command, whole on one line (copyable). */
export function formatExamples(examples: readonly (readonly [string, string])[]): string {
  if (examples.length === 0) return '';
  const lines = examples.flatMap(([cmd, desc]) => [
    ...(desc !== '' ? [`  # ${desc}`] : []),
    `  ${cmd.replace(/\$0/g, 'flm-grow')}`,
  ]);
  return `\nExamples:\n${lines.join('\n')}\n`;
}

type YargsFn = (typeof import('yargs'))['default'];
type Command = { command?: string | readonly string[]; builder?: unknown };

/** The visible option names of one command (or the global ones), from its builder. */
export function optionNames(name: string | undefined, commands: readonly Command[], yargs: YargsFn): string[] {
  let y: unknown = yargs([]);
  const c = commands.find((x) => String(x.command).split(' ')[0] === name);
  if (typeof c?.builder === 'function') y = (c.builder as (y: unknown) => unknown)(y) ?? y;
  const o = (y as { getOptions(): { key: Record<string, unknown>; hiddenOptions?: string[] } }).getOptions();
  const hidden = new Set(o.hiddenOptions ?? []);
  return [...Object.keys(o.key).filter((k) => /^[a-z][a-z0-9-]*$/.test(k) && !hidden.has(k)), 'help'];
}

/** "Unknown argument: hidden_size" -> "unknown option: --hidden_size (did you mean --hidden-size?)" */
function withSuggestions(msg: string, known: string[], suggest: (w: string, c: readonly string[]) => string[]): string {
  const m = /^Unknown arguments?: (.*)$/.exec(msg);
  if (m === null) return msg;
  const words = m[1].split(', ');
  // yargs reports `--hiden-size` twice, as typed and camel-cased (hidenSize): keep the typed one
  const kebab = (w: string) => w.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
  const typed = words.filter((w) => kebab(w) === w || !words.includes(kebab(w)));
  const parts = typed.map((w) => {
    const s = suggest(w, known);
    const shown = w.length === 1 ? `-${w}` : `--${w}`;
    return s.length > 0 ? `${shown} (did you mean ${s.map((x) => `--${x}`).join(' or ')}?)` : shown;
  });
  return `unknown option${parts.length > 1 ? 's' : ''}: ${parts.join(', ')}`;
}

function report(e: unknown): number {
  if (e instanceof FlmGrowError) {
    process.stderr.write(`flm-grow: error: ${e.message}\n`);
    return e.code === 'VerifyFailed' ? 1 : 2;
  }
  // A full disk, a read-only folder, a missing file: the environment, not a bug (exit 2, no stack).
  const os = describeOsError(e);
  if (os !== undefined) {
    process.stderr.write(`flm-grow: error: ${os}\n`);
    return 2;
  }
  process.stderr.write(`flm-grow: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
  return 3;
}

// `flm-grow inspect ... | head`: the reader left, which is not an error of ours (as cat or ls)
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

main(process.argv.slice(2)).catch((e: unknown) => {
  process.exitCode = report(e);
});
