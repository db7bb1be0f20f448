import { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';

/**
 * The tensors (names, dtypes, shapes, bytes) and metadata of a safetensors file, for an exact
 * comparison of two files that does not depend on the writer's layout (the torch engine writes
 * through the safetensors package, which orders tensors by dtype and name; flm-grow's writer in
 * insertion order).
 */
export async function tensorsAndMetadata(path: string): Promise<unknown> {
  const f = await SafetensorsFile.open(path);
  try {
    const out: Record<string, unknown> = { __metadata__: f.metadata };
    for (const [n, info] of f.tensors)
      out[n] = { dtype: info.dtype, shape: [...info.shape], bytes: Buffer.from(await f.read(n)).toString('hex') };
    return out;
  } finally {
    await f.close();
  }
}
