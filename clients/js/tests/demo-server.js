// Starts samples/Idem.Demo (built by `dotnet build`) on a free loopback port with a fresh SQLite file in a temp
// directory, for the client's tests against the real server. IDEM_DEMO_DLL overrides where the build is.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');

export function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

export async function startDemo() {
  let dll = process.env.IDEM_DEMO_DLL ?? join(repo, 'samples/Idem.Demo/bin/Release/net10.0/Idem.Demo.dll');
  if (!existsSync(dll)) {
    execFileSync('dotnet', ['build', join(repo, 'samples/Idem.Demo/Idem.Demo.csproj'), '-c', 'Release', '-nologo', '-v', 'quiet'], { stdio: 'inherit' });
  }
  const dir = mkdtempSync(join(tmpdir(), 'idem-js-demo-'));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn('dotnet', [dll, '--urls', url], {
    cwd: dir,
    env: { ...process.env, ASPNETCORE_ENVIRONMENT: 'Production', Logging__LogLevel__Default: 'Warning' },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (chunk) => { stderr += chunk; });
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the demo exited with ${child.exitCode}: ${stderr}`);
    try {
      const response = await fetch(`${url}/stats`, { signal: AbortSignal.timeout(2000) });
      if (response.ok) break;
    } catch { /* not up yet */ }
    if (Date.now() > deadline) { child.kill(); throw new Error(`the demo did not answer within 60 s: ${stderr}`); }
    await new Promise((r) => setTimeout(r, 200));
  }
  return {
    url,
    async stats() {
      return (await fetch(`${url}/stats`)).json();
    },
    async stop() {
      child.kill('SIGTERM');
      await new Promise((r) => { if (child.exitCode !== null) r(); else child.once('exit', r); setTimeout(r, 10_000); });
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
