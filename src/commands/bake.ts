import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const bakeCommand: CommandModule = {
  command: 'bake <grown> <destination>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'bake is not implemented yet');
  },
};
