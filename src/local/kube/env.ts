/** The shell lines `ambit local env` prints: KUBECONFIG, and the matching kubectl first on PATH. */

/** Single-quotes `s` for POSIX shells. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

export function kubeShellEnv(o: { kubeconfig: string; kubectlDir: string }): string {
  return `export KUBECONFIG=${shellQuote(o.kubeconfig)}\nexport PATH=${shellQuote(o.kubectlDir)}:"$PATH"\n`;
}

/** Where `ambit local up --kubernetes` keeps its control plane: `<state dir>/kube`. */
export function localKubeDir(stateDir: string): string {
  return `${stateDir}/kube`;
}

export function localKubeconfig(stateDir: string): string {
  return `${localKubeDir(stateDir)}/admin.kubeconfig`;
}
