/** The small part of Kubernetes object shapes that Ambit reads. Field names as in the Kubernetes API. */
export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  ownerReferences?: { apiVersion: string; kind: string; name: string; uid: string; controller?: boolean }[];
}

export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: ObjectMeta;
  spec?: unknown;
  status?: unknown;
}

export interface ContainerPort { name?: string; containerPort: number; protocol?: string }
export interface Container {
  name: string;
  image?: string;
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string }[];
  ports?: ContainerPort[];
}

export interface PodSpec {
  nodeName?: string;
  serviceAccountName?: string;
  containers: Container[];
  restartPolicy?: string;
}
export interface PodStatus {
  phase?: 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'Unknown';
  podIP?: string;
  podIPs?: { ip: string }[];
  hostIP?: string;
  conditions?: { type: string; status: 'True' | 'False' | 'Unknown'; reason?: string; message?: string }[];
}
export interface Pod extends KubeObject { kind: 'Pod'; spec: PodSpec; status?: PodStatus }

export interface ServicePortSpec {
  name?: string;
  port: number;
  targetPort?: number | string;
  protocol?: 'TCP' | 'UDP' | 'SCTP';
  appProtocol?: string;
}
export interface ServiceSpec {
  type?: string;
  selector?: Record<string, string>;
  ports?: ServicePortSpec[];
  clusterIP?: string;
  clusterIPs?: string[];
}
export interface Service extends KubeObject { kind: 'Service'; spec: ServiceSpec }

export interface Namespace extends KubeObject { kind: 'Namespace' }

export interface Deployment extends KubeObject {
  kind: 'Deployment';
  spec: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    template: { metadata?: Partial<ObjectMeta>; spec: PodSpec };
  };
}
