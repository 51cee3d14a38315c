/**
 * readTextFile(file): a UTF-8 file's text without a leading byte-order mark; a file that cannot be read is
 * an SftError naming the file and the reason (the OS code, e.g. ENOENT, when there is one).
 */
import { readFileSync } from 'node:fs';
import { SftError } from './errors';

export function readTextFile(file: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/^\uFEFF/, '');
  } catch (e) {
    throw new SftError(`cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, file);
  }
}
