import { SafetensorsFile } from '../../src/checkpoint/safetensors.ts';
import { bytesToFloat32 } from '../../src/util/dtype.ts';

export type Tensors = Map<string, { shape: number[]; data: Float32Array }>;

/** Every tensor of a safetensors file as f32, with its shape. */
export async function readAll(path: string): Promise<Tensors> {
  const f = await SafetensorsFile.open(path);
  const out: Tensors = new Map();
  try {
    for (const [n, info] of f.tensors) out.set(n, { shape: [...info.shape], data: bytesToFloat32(await f.read(n), info.dtype) });
  } finally {
    await f.close();
  }
  return out;
}

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
