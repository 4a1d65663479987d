/**
 * What the controller adds on top of a Kubernetes source: the CA kept in a Secret, agent tokens
 * checked by TokenReview, pod placement confirmed with the API server, and the root published in a
 * ConfigMap. Loaded only with that source, so a controller on a manifest directory never loads the
 * Kubernetes client (~60 MB).
 */
import { CertificateAuthority } from './ca/ca.ts';
import { loadCaFromSecret, RootCertPublisher } from './ca/kube-store.ts';
import { podOnNode, TokenReviewer } from './ca/token-review.ts';
import type { KubeCaOptions } from './controller.ts';
import type { PushServerOptions } from './push/push-server.ts';
import { defaultLeaseNamespace, type KubeSource } from './sources/kube/kube-source.ts';

export interface KubeWiring {
  ca: CertificateAuthority;
  push: Pick<PushServerOptions, 'reviewToken' | 'confirmPlacement'>;
  rootPublisher: RootCertPublisher | undefined;
}

export async function wireKube(kube: KubeSource, o: { caDir: string; kube?: KubeCaOptions }, trustDomain: string): Promise<KubeWiring> {
  const namespace = o.kube?.namespace ?? kube.elector?.namespace ?? defaultLeaseNamespace();
  const ca = o.kube?.caSecret
    ? await loadCaFromSecret(kube.client, { namespace, name: o.kube.caSecret, dir: o.caDir, trustDomain })
    : await CertificateAuthority.loadOrCreate(o.caDir, { trustDomain });
  const tokens = new TokenReviewer(kube.client, o.kube);
  return {
    ca,
    push: {
      reviewToken: (t) => tokens.review(t),
      confirmPlacement: (node, ns, sa) => podOnNode(kube.client, node, ns, sa),
    },
    rootPublisher: o.kube?.publishRoot !== false ? new RootCertPublisher(kube.client, { namespace, rootsPem: ca.rootCertPem }) : undefined,
  };
}
