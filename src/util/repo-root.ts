// Where the project lives on disk, found from any of its files (src/ or dist/src/).
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';

/** The nearest ancestor of `start` whose package.json is named "mediated". */
export function repoRoot(start: string): string {
  for (let dir = start; ; dir = dirname(dir)) {
    try {
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: unknown };
      if (pkg.name === 'mediated') return dir;
    } catch {
      // no (readable) package.json here: keep walking up
    }
    if (dirname(dir) === dir) throw new Error(`mediated: no package.json named "mediated" above ${start}`);
  }
}
