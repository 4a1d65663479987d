/**
 * The local API server listens on host loopback only; pods' CNI plugin runs inside a node netns
 * and reaches the host through the node bridge. This relays plain TCP (TLS stays end to end) from
 * the host bridge address to the API server, the way a node reaches a cluster's API server over
 * its network.
 */
import { createConnection, createServer, type Server } from 'node:net';
import { AmbitError, errorMessage } from '../../shared/errors.ts';

export interface ApiRelay { url: string; close(): Promise<void> }

export async function startApiRelay(listenHost: string, target: { host: string; port: number }): Promise<ApiRelay> {
  const server: Server = createServer((client) => {
    const upstream = createConnection(target);
    client.pipe(upstream).pipe(client);
    const end = () => { client.destroy(); upstream.destroy(); };
    client.on('error', end);
    upstream.on('error', end);
    client.on('close', end);
    upstream.on('close', end);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err) => reject(new AmbitError('LOCAL_KUBE_RELAY', `cannot relay the API server on ${listenHost}: ${errorMessage(err)}`)));
    server.listen(0, listenHost, resolve);
  });
  const { port } = server.address() as { port: number };
  return {
    url: `https://${listenHost}:${port}`,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}
