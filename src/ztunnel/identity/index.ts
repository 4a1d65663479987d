export { CertificateManager, type CertificateStatus, type CertificateState, type CertificateManagerOptions, type WorkloadIdentityRef } from './certificate-manager.ts';
export { type Credentials, type CsrSigner, validateIssued, validateRoots } from './credentials.ts';
export { createCsr } from './csr.ts';
