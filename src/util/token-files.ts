/**
 * nanoGPT-style token files: raw little-endian ids, the width told by the extension. The trainer
 * reads them as data and layer selection as calibration input, so the table lives here, once.
 */
import { extname } from 'node:path';

export type TokenDtype = 'uint16' | 'uint32';

const DTYPE_BY_EXT: Record<string, TokenDtype> = { '.bin': 'uint16', '.u16': 'uint16', '.u32': 'uint32' };

/** The token dtype a path implies by its extension, or undefined for text. */
export function tokenDtypeForPath(path: string): TokenDtype | undefined {
  return DTYPE_BY_EXT[extname(path).toLowerCase()];
}

/** Bytes per id. */
export function tokenWidth(dtype: TokenDtype): 2 | 4 {
  return dtype === 'uint16' ? 2 : 4;
}
