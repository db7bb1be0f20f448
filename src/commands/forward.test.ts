/**
 * `flm-grow forward` end to end on the f32 fixture: the file it writes holds what transformers
 * computed (logits and every hidden state), under the names transformers uses.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import type { ArgumentsCamelCase } from 'yargs';
import { SafetensorsFile } from '../checkpoint/safetensors.ts';
import { bytesToFloat32 } from '../util/dtype.ts';
import { FlmGrowError } from '../util/errors.ts';
import { makeTempDir } from '../../test/support/model.ts';
import { forwardCommand, topK } from './forward.ts';

const FIX = join(import.meta.dirname, '../../fixtures/hf/llama-tiny-f32');
const tmp = makeTempDir('flm-grow-forward-cli-');
afterAll(() => tmp.cleanup());

function runHandler(args: Record<string, unknown>): Promise<void> {
  const a = {
    _: [],
    $0: 'flm-grow',
    top: 5,
    masks: true,
    overwrite: false,
    backend: 'wasm',
    quiet: true,
    ...args,
  } as unknown as ArgumentsCamelCase;
  return Promise.resolve((forwardCommand.handler as (x: ArgumentsCamelCase) => Promise<void>)(a));
}

describe('flm-grow forward', () => {
  it('writes logits and hidden_states.0..L matching transformers', async () => {
    const out = join(tmp.dir, 'out.safetensors');
    await runHandler({ checkpoint: FIX, input: join(FIX, 'reference.safetensors'), output: out });
    const ours = await SafetensorsFile.open(out);
    const ref = await SafetensorsFile.open(join(FIX, 'reference.safetensors'));
    const names = [...ref.tensors.keys()].filter((n) => n !== 'input_ids').sort();
    expect([...ours.tensors.keys()].sort()).toEqual(names);
    let worst = 0;
    for (const n of names) {
      expect(ours.info(n).shape).toEqual(ref.info(n).shape);
      expect(ours.info(n).dtype).toBe('F32');
      const a = bytesToFloat32(await ours.read(n), 'F32'),
        b = bytesToFloat32(await ref.read(n), 'F32');
      for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    }
    console.log(
      `[flm-grow forward vs transformers] llama-tiny-f32: max |Δ| over logits and hidden states = ${worst.toExponential(3)}`,
    );
    expect(worst).toBeLessThanOrEqual(1e-4);
    await ours.close();
    await ref.close();
    await expect(runHandler({ checkpoint: FIX, input: join(FIX, 'reference.safetensors'), output: out })).rejects.toThrow(
      FlmGrowError,
    );
  });

  it('topK orders the best ids first', () => {
    expect(topK(Float32Array.of(0.1, 3, -1, 2, 2.5), 3)).toEqual([
      [1, 3],
      [4, 2.5],
      [3, 2],
    ]);
  });
});
