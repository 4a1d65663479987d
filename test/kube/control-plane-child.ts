/** Starts a control plane in argv[2], prints "ready" and waits to be killed (the crash test's victim). */
import { startKubeControlPlane } from '../../src/local/kube/control-plane.ts';

await startKubeControlPlane({ dir: process.argv[2] });
process.stdout.write('ready\n');
setInterval(() => {}, 1 << 30);
