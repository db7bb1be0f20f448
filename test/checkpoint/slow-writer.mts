// Child for the SIGKILL test: starts a checkpoint write, says so, then keeps writing slowly.
import { CheckpointWriter } from '../../src/checkpoint/checkpoint-writer.ts';

const dest = process.argv[2];
const decls = Array.from({ length: 200 }, (_, k) => ({ name: `t${k}`, dtype: 'F32' as const, shape: [256] }));
const w = await CheckpointWriter.create(dest, decls, { maxShardSize: 4096 });
await w.writeSideFile('config.json', '{}');
for (let k = 0; k < decls.length; k++) {
  await w.writeTensor(`t${k}`, new Uint8Array(1024));
  if (k === 5) process.stdout.write('started\n');
  await new Promise((r) => setTimeout(r, 50));
}
await w.commit();
process.stdout.write('committed\n');
