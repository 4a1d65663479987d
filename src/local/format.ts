/** kubectl-like tables for `ambit local get`. */
import type { KubeObject, Pod, Service } from '../api/k8s.ts';

export function age(ts: string | undefined, now = Date.now()): string {
  if (!ts) return '<unknown>';
  const s = Math.max(0, Math.floor((now - Date.parse(ts)) / 1000));
  if (s < 120) return `${s}s`;
  if (s < 7200) return `${Math.floor(s / 60)}m`;
  if (s < 172800) return `${Math.floor(s / 3600)}h`;
  return `${Math.floor(s / 86400)}d`;
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] + 3))).join('').trimEnd()).join('\n') + '\n';
}

export interface TableOptions { allNamespaces: boolean; wide: boolean }

export function podsTable(pods: Pod[], o: TableOptions): string {
  const head = [...(o.allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'READY', 'STATUS', 'RESTARTS', 'AGE', ...(o.wide ? ['IP', 'NODE', 'NETNS'] : [])];
  const rows = pods.map((p) => {
    const cs = (p.status as { containerStatuses?: { ready: boolean; restartCount: number; state?: { waiting?: { reason?: string } } }[] } | undefined)?.containerStatuses ?? [];
    const ready = cs.filter((c) => c.ready).length;
    const restarts = cs.reduce((a, c) => a + c.restartCount, 0);
    const waiting = cs.find((c) => c.state?.waiting)?.state?.waiting?.reason;
    const status = p.metadata.deletionTimestamp ? 'Terminating' : (waiting ?? p.status?.phase ?? 'Pending');
    return [
      ...(o.allNamespaces ? [p.metadata.namespace ?? ''] : []),
      p.metadata.name, `${ready}/${p.spec.containers.length}`, status, String(restarts), age(p.metadata.creationTimestamp),
      ...(o.wide ? [p.status?.podIP ?? '<none>', p.spec.nodeName ?? '<none>', p.metadata.annotations?.['local.ambit.dev/netns'] ?? ''] : []),
    ];
  });
  return table([head, ...rows]);
}

export function servicesTable(svcs: Service[], o: TableOptions): string {
  const head = [...(o.allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'TYPE', 'CLUSTER-IP', 'PORT(S)', 'AGE', ...(o.wide ? ['SELECTOR'] : [])];
  const rows = svcs.map((s) => [
    ...(o.allNamespaces ? [s.metadata.namespace ?? ''] : []),
    s.metadata.name, s.spec.type ?? 'ClusterIP', s.spec.clusterIP ?? '<none>',
    (s.spec.ports ?? []).map((p) => `${p.port}/${p.protocol ?? 'TCP'}`).join(',') || '<none>',
    age(s.metadata.creationTimestamp),
    ...(o.wide ? [Object.entries(s.spec.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',') || '<none>'] : []),
  ]);
  return table([head, ...rows]);
}

export function nodesTable(nodes: KubeObject[], o: TableOptions): string {
  const head = ['NAME', 'STATUS', 'INTERNAL-IP', 'POD-CIDR', 'PODS', 'AGE', ...(o.wide ? ['NETNS'] : [])];
  const rows = nodes.map((n) => {
    const st = n.status as { addresses?: { type: string; address: string }[]; pods?: number };
    const spec = n.spec as { podCIDR?: string };
    return [n.metadata.name, 'Ready', st.addresses?.find((a) => a.type === 'InternalIP')?.address ?? '', spec.podCIDR ?? '', String(st.pods ?? 0),
      age(n.metadata.creationTimestamp), ...(o.wide ? [n.metadata.annotations?.['local.ambit.dev/netns'] ?? ''] : [])];
  });
  return table([head, ...rows]);
}

export function genericTable(objs: KubeObject[], o: TableOptions): string {
  const head = [...(o.allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'AGE'];
  return table([head, ...objs.map((x) => [...(o.allNamespaces ? [x.metadata.namespace ?? ''] : []), x.metadata.name, age(x.metadata.creationTimestamp)])]);
}

export function deploymentsTable(objs: KubeObject[], pods: Pod[], o: TableOptions): string {
  const head = [...(o.allNamespaces ? ['NAMESPACE'] : []), 'NAME', 'READY', 'AGE'];
  const rows = objs.map((d) => {
    const owned = pods.filter((p) => p.metadata.ownerReferences?.some((r) => r.uid === d.metadata.uid) && !p.metadata.deletionTimestamp);
    // With --kubernetes the pods belong to ReplicaSets: the Deployment's own status counts them.
    const counted = (d.status as { readyReplicas?: number } | undefined)?.readyReplicas;
    const ready = d.status ? counted ?? 0 : owned.filter((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')).length;
    const want = (d.spec as { replicas?: number }).replicas ?? 1;
    return [...(o.allNamespaces ? [d.metadata.namespace ?? ''] : []), d.metadata.name, `${ready}/${want}`, age(d.metadata.creationTimestamp)];
  });
  return table([head, ...rows]);
}
