import type { CommandModule } from 'yargs';
import { FlmGrowError } from '../errors.ts';

// Placeholder: replaced by the module that implements this command.
export const assembleCommand: CommandModule = {
  command: 'assemble <destination> <parts..>',
  describe: '(not implemented yet)',
  handler: () => {
    throw new FlmGrowError('NotImplemented', 'assemble is not implemented yet');
  },
};
