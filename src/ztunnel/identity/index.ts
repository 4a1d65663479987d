export { CertificateManager, type CertificateStatus, type CertificateState, type CertificateManagerOptions, type WorkloadIdentityRef } from './certificate-manager.ts';
export { type Credentials, type CsrSigner, validateIssued } from './credentials.ts';
export { createCsr } from './csr.ts';
