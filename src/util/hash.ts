/** sha256 of files and bytes: the one hash behind manifests, part files and the writer's digests. */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

export function sha256File(path: string): Promise<string> {
  return new Promise((res, rej) => {
    const h = createHash('sha256');
    createReadStream(path, { highWaterMark: 8 << 20 })
      .on('data', (d) => h.update(d))
      .on('error', rej)
      .on('end', () => res(h.digest('hex')));
  });
}

export function sha256Bytes(b: Uint8Array | string): string {
  return createHash('sha256').update(b).digest('hex');
}
