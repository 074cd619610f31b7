/* index.d.ts compiles, and fits the README's use (test/types-check.ts) */

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const dir = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const tsc = path.join(dir, 'node_modules', 'typescript', 'bin', 'tsc');

test('index.d.ts: tsc --strict accepts the README usage', {
    skip: fs.existsSync(tsc) ? false : 'no typescript in node_modules (npm ci)'
}, () => {
    const r = spawnSync(process.execPath, [tsc, '--noEmit', '--strict',
        '--target', 'es2022', '--module', 'nodenext', '--moduleResolution', 'nodenext',
        '--skipLibCheck', 'false', path.join(dir, 'test', 'types-check.ts')],
        { encoding: 'utf8', cwd: dir });

    assert.equal(r.status, 0, r.stdout + r.stderr);
});
