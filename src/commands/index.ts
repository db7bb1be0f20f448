import type { CommandModule } from 'yargs';
import { inspectCommand } from './inspect.ts';
import { forwardCommand } from './forward.ts';
import { verifyCommand } from './verify.ts';
import { planCommand } from './plan.ts';
import { growCommand } from './grow.ts';
import { bakeCommand } from './bake.ts';
import { selectLayersCommand } from './select-layers.ts';
import { trainCommand } from './train.ts';
import { plotCommand } from './plot.ts';
import { runCommand } from './run.ts';
import { synthCommand } from './synth.ts';
import { assembleCommand } from './assemble.ts';

export const commands: CommandModule<any, any>[] = [
  inspectCommand,
  planCommand,
  growCommand,
  verifyCommand,
  forwardCommand,
  selectLayersCommand,
  trainCommand,
  bakeCommand,
  runCommand,
  plotCommand,
  synthCommand,
  assembleCommand,
];

/** The command names, as typed (`select-layers`, not the usage line). */
export const COMMAND_NAMES: string[] = commands.map((c) => String(c.command).split(' ')[0]);
