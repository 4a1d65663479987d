/**
 * The controller's side of the control-plane wire: the ControlPlane service loaded from
 * proto/ambit/v1/control.proto with proto-loader for the grpc-js server. The records and their
 * mapping live in wire-records.ts (re-exported here), which the agent imports without gRPC.
 */
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export * from './wire-records.ts';

const PROTO_ROOT = fileURLToPath(new URL('../../../proto', import.meta.url));

// ---- loading

let cached: grpc.ServiceClientConstructor | undefined;

/** The ControlPlane service (its `.service` definition is what the server registers). */
export function controlPlaneService(): grpc.ServiceClientConstructor {
  if (cached) return cached;
  const def = protoLoader.loadSync('ambit/v1/control.proto', {
    includeDirs: [PROTO_ROOT],
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    arrays: true,
    objects: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { ambit: { v1: { ControlPlane: grpc.ServiceClientConstructor } } };
  cached = pkg.ambit.v1.ControlPlane;
  return cached;
}
