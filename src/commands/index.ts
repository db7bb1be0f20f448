/**
 * The commands, in --help order: each one's usage line and description (all that the top-level
 * --help shows) and its module, imported only when its command runs or shows its own help. So
 * start-up loads one command's options and none of the others' (bench/startup.ts times it,
 * test/cli/startup-modules.test.ts checks what loads). Each module takes its lines from here.
 */
import type { CommandModule } from 'yargs';

export interface CommandEntry {
  /** The usage line yargs parses: the name, then the positionals the module's builder defines. */
  command: string;
  describe: string;
  load: () => Promise<CommandModule<any, any>>;
}

const ENTRIES = {
  inspect: {
    command: 'inspect <checkpoint>',
    describe:
      'Summarise a checkpoint from its headers: config, parameters, bytes, dtypes, shards, masks, manifest, config/tensor mismatches',
    load: async () => (await import('./inspect.ts')).inspectCommand,
  },
  plan: {
    command: 'plan <source>',
    describe:
      'Show what a growth plan will do to a checkpoint (or config.json): target config, size, disk, memory, per-tensor operations',
    load: async () => (await import('./plan.ts')).planCommand,
  },
  grow: {
    command: 'grow <source> [destination]',
    describe: 'Grow a checkpoint function-preservingly (MSG): streams tensor by tensor, writes masks and a manifest',
    load: async () => (await import('./grow.ts')).growCommand,
  },
  verify: {
    command: 'verify <source> <grown>',
    describe:
      'Check function preservation: run both checkpoints (layer-streamed, masks applied) on the same tokens and compare logits and hidden states; exit 1 above tolerance',
    load: async () => (await import('./verify.ts')).verifyCommand,
  },
  forward: {
    command: 'forward <checkpoint>',
    describe:
      'Run the model (layer-streamed, f32, masks applied when present): logits and hidden states as transformers computes them',
    load: async () => (await import('./forward.ts')).forwardCommand,
  },
  'select-layers': {
    command: 'select-layers <checkpoint>',
    describe: 'Per-layer input->output distances on calibration tokens (layer-streamed) and the layers a growth would duplicate',
    load: async () => (await import('./select-layers.ts')).selectLayersCommand,
  },
  train: {
    command: 'train <checkpoint>',
    describe:
      'Continue pre-training a (grown) checkpoint: AdamW, MSG mask annealing from its manifest, checkpoints with optimizer state',
    load: async () => (await import('./train.ts')).trainCommand,
  },
  bake: {
    command: 'bake <grown> [destination]',
    describe: 'Write a plain checkpoint (no masks) once every mask has reached 1',
    load: async () => (await import('./bake.ts')).bakeCommand,
  },
  export: {
    command: 'export <checkpoint> [destination]',
    describe:
      "Turn a sharded training checkpoint (--sharded-save: torch.distributed.checkpoint shards) into flm-grow's HF layout, streaming",
    load: async () => (await import('./export.ts')).exportCommand,
  },
  run: {
    command: 'run <pipeline>',
    describe: 'Run a stage pipeline (init/train/grow/verify/bake); resumable: complete stages are skipped',
    load: async () => (await import('./run.ts')).runCommand,
  },
  plot: {
    command: 'plot <metrics..>',
    describe: 'Draw loss curves (growth points marked) from metrics.jsonl files to .svg or .png',
    load: async () => (await import('./plot.ts')).plotCommand,
  },
  synth: {
    command: 'synth [dir]',
    describe:
      "Write a random checkpoint of a Tele-FLM stage's exact widths, of a family or of any supported config.json (for rehearsals and tests)",
    load: async () => (await import('./synth.ts')).synthCommand,
  },
  assemble: {
    command: 'assemble [destination] [parts..]',
    describe:
      'Join the part folders of a split grow (`grow --part i/n`) into one checkpoint, byte-identical to a single-machine grow',
    load: async () => (await import('./assemble.ts')).assembleCommand,
  },
} satisfies Record<string, CommandEntry>;

type CommandName = keyof typeof ENTRIES;

/** Usage line and description of each command, for its module's CommandModule. */
export const COMMAND_LINES = Object.fromEntries(
  Object.entries(ENTRIES).map(([k, e]) => [k, { command: e.command, describe: e.describe }]),
) as Record<CommandName, { command: string; describe: string }>;

export const COMMANDS: CommandEntry[] = Object.values(ENTRIES);

/** The command names, as typed (`select-layers`, not the usage line). */
export const COMMAND_NAMES: string[] = COMMANDS.map((c) => c.command.split(' ')[0]);

/** Every command's module, loaded (for tests and docs that go through all of them). */
export async function loadCommands(): Promise<CommandModule<any, any>[]> {
  return Promise.all(COMMANDS.map((c) => c.load()));
}
