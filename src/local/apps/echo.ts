/**
 * The built-in image `ambit/echo`: an HTTP server that answers every request with who it is and who
 * asked: {pod, namespace, version, sourceIp, method, path, headers}. The local runtime passes
 * POD_NAME, POD_NAMESPACE, POD_VERSION (the pod's `version` label) and PORT.
 */
import { createServer } from 'node:http';

const port = Number(process.env.PORT ?? 8080);
const me = { pod: process.env.POD_NAME ?? '', namespace: process.env.POD_NAMESPACE ?? '', version: process.env.POD_VERSION ?? '' };

const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    const body = JSON.stringify({
      ...me,
      sourceIp: (req.socket.remoteAddress ?? '').replace(/^::ffff:/, ''),
      method: req.method,
      path: req.url,
      headers: req.headers,
      bodyBytes: Buffer.concat(chunks).length,
    });
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
    res.end(body);
  });
});
server.keepAliveTimeout = 5000;
server.listen(port, '0.0.0.0', () => process.stdout.write(`echo: ${me.namespace}/${me.pod} version=${me.version || '-'} listening on :${port}\n`));
for (const s of ['SIGTERM', 'SIGINT'] as const) {
  process.on(s, () => {
    server.close(() => process.exit(0));
    server.closeAllConnections();
    setTimeout(() => process.exit(0), 2000).unref();
  });
}
