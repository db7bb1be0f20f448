/**
 * OS errors (a full disk, a read-only filesystem, a missing file) are the user's environment,
 * not a bug: the CLI prints them as one line naming the operation and the path and exits 2,
 * instead of "internal error" with a stack trace. This is the one place that knows the codes.
 */

const REASONS: Readonly<Record<string, string>> = {
  ENOSPC: 'no space left on the device (disk full)',
  EDQUOT: 'disk quota exceeded',
  EROFS: 'read-only filesystem',
  EEXIST: 'already exists',
  ENOENT: 'no such file or folder',
  ENOTDIR: 'a component of the path is a file, not a folder',
  EISDIR: 'is a folder, not a file',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EMFILE: 'too many open files',
  ENFILE: 'too many open files in the system',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many levels of symbolic links',
  EBUSY: 'resource busy',
  EXDEV: 'cannot rename across filesystems',
  EFBIG: 'file too large for the filesystem',
  EIO: 'input/output error',
  ENOTEMPTY: 'folder not empty',
  ETXTBSY: 'file busy',
};

/** Node's syscall names as what the user asked for. */
const OPERATIONS: Readonly<Record<string, string>> = {
  open: 'open',
  read: 'read',
  write: 'write',
  mkdir: 'create folder',
  rename: 'rename',
  unlink: 'remove',
  rmdir: 'remove folder',
  rm: 'remove',
  copyfile: 'copy',
  stat: 'stat',
  lstat: 'stat',
  scandir: 'list folder',
  opendir: 'list folder',
  fsync: 'sync',
  close: 'close',
  ftruncate: 'truncate',
  symlink: 'link',
  link: 'link',
  access: 'access',
  chmod: 'chmod',
  utime: 'touch',
};

function isErrno(e: unknown): e is NodeJS.ErrnoException {
  return (
    e instanceof Error &&
    typeof (e as NodeJS.ErrnoException).code === 'string' &&
    /^E[A-Z0-9]+$/.test((e as NodeJS.ErrnoException).code as string)
  );
}

/** "cannot write /out/model.safetensors: no space left on the device (disk full) [ENOSPC]", or undefined for a non-OS error. */
export function describeOsError(e: unknown): string | undefined {
  if (!isErrno(e)) return undefined;
  const code = e.code as string;
  const reason = REASONS[code];
  if (reason === undefined && e.syscall === undefined) return undefined;
  // mkdir -p through a path component that is a file reports EEXIST for that component
  if (code === 'EEXIST' && e.syscall === 'mkdir')
    return `cannot create folder ${e.path ?? ''}: a file of that name is in the way [${code}]`;
  const op = e.syscall !== undefined ? (OPERATIONS[e.syscall] ?? e.syscall) : 'access';
  const d = (e as { dest?: unknown }).dest;
  const dest = typeof d === 'string' ? ` -> ${d}` : '';
  const path = typeof e.path === 'string' ? ` ${e.path}${dest}` : '';
  return `cannot ${op}${path}: ${reason ?? e.message} [${code}]`;
}

/**
 * FileHandle.write/sync errors carry no path (Node knows only the descriptor); the writer that
 * holds the handle adds it so the message can name the file. Returns `e` for rethrowing.
 */
export function withErrorPath(e: unknown, path: string): unknown {
  if (isErrno(e) && e.path === undefined) e.path = path;
  return e;
}
