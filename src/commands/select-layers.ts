import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const selectLayersCommand: CommandModule = {
  command: 'select-layers <checkpoint>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'select-layers is not implemented yet');
  },
};
