/**
 * The flm-grow command line. Each command lives in src/commands/<name>.ts; this file only wires
 * them up and turns our typed errors into a one-line message and a non-zero exit code.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { FlmGrowError } from './errors.ts';
import { commands } from './commands/index.ts';
import { TOOL_VERSION } from './manifest.ts';
import { torchEngineLabel } from './torch-engine.ts';
import { describeOsError } from './util/os-errors.ts';

export async function main(argv: string[]): Promise<void> {
  if (argv.length === 1 && argv[0] === '--version') {
    // the torch engine probe starts a Python, so it runs only when asked for
    process.stdout.write(`flm-grow ${TOOL_VERSION}\n${torchEngineLabel()}\n`);
    return;
  }
  let cli = yargs(argv)
    .scriptName('flm-grow')
    .usage('$0 <command> [options]\n\nGrow Llama / Tele-FLM checkpoints function-preservingly (Masked Structural Growth).')
    .strict()
    .demandCommand(1, 'Name a command (see --help).')
    .recommendCommands()
    .wrap(Math.min(110, process.stdout.columns ?? 110))
    .fail((msg, err) => {
      throw err ?? new FlmGrowError('UsageError', msg);
    });
  for (const c of commands) cli = cli.command(c);
  await cli.parseAsync();
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

main(hideBin(process.argv)).catch((e: unknown) => {
  process.exitCode = report(e);
});
