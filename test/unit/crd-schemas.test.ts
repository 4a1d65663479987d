/**
 * Ambit's mesh CRDs: the committed YAML is what src/api/crds/ renders, every schema is structural,
 * and example objects are accepted or refused (naming the field) by the schemas and the TypeScript
 * twins of their CEL rules. test/kube/manifests.test.ts repeats the examples on a real API server.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { parse, parseAllDocuments } from 'yaml';
import { MESH_CRDS, crdObject } from '../../src/api/crds/definitions.ts';
import { renderCrdFiles } from '../../src/api/crds/render.ts';
import type { Schema } from '../../src/api/crds/schema.ts';
import { INVALID, VALID } from '../helpers/crd-examples.ts';
import { structuralProblems, validateObject } from '../helpers/openapi-check.ts';

const crdDir = new URL('../../controller/crds/', import.meta.url);

test('controller/crds is up to date with src/api/crds (run: node scripts/gen-crds.ts)', () => {
  const files = renderCrdFiles();
  const onDisk = readdirSync(crdDir).filter((f) => f.endsWith('.yaml')).sort();
  assert.deepEqual(onDisk, [...files.keys()].sort());
  for (const [name, text] of files) assert.equal(readFileSync(new URL(name, crdDir), 'utf8'), text, `${name} differs`);
});

test('every CRD: names, versions (v1 stored, all served), status subresource, printer columns', () => {
  const shortNames = new Map(MESH_CRDS.map((c) => [c.kind, c.shortName]));
  assert.deepEqual(Object.fromEntries(shortNames), {
    VirtualService: 'vs', DestinationRule: 'dr', Gateway: 'gw', ServiceEntry: 'se', AuthorizationPolicy: 'ap', PeerAuthentication: 'pa', RequestAuthentication: 'ra',
  });
  for (const c of MESH_CRDS) {
    const crd = parse(readFileSync(new URL(`${c.group}_${c.plural}.yaml`, crdDir), 'utf8'));
    assert.equal(crd.metadata.name, `${c.plural}.${c.group}`);
    const versions = crd.spec.versions as any[];
    assert.ok(versions.some((v) => v.name === 'v1' && v.storage), `${c.kind}: v1 is the storage version`);
    assert.equal(versions.filter((v) => v.storage).length, 1, `${c.kind}: exactly one storage version`);
    assert.ok(versions.some((v) => v.name === 'v1beta1'), `${c.kind}: v1beta1 served`);
    for (const v of versions) {
      assert.equal(v.served, true);
      assert.deepEqual(v.subresources, { status: {} });
      assert.ok(v.additionalPrinterColumns.some((col: any) => col.name === 'Age'));
      assert.deepEqual(v.schema, versions[0].schema, `${c.kind} ${v.name}: same schema as ${versions[0].name}`);
    }
  }
});

test('every CRD schema is structural, with no preserve-unknown-fields', () => {
  for (const c of MESH_CRDS) {
    const schema = (crdObject(c).spec as any).versions[0].schema.openAPIV3Schema as Schema;
    assert.deepEqual(structuralProblems(schema), [], c.kind);
    // and the rendered YAML says the same thing as the objects it came from
    const fromYaml = parse(readFileSync(new URL(`${c.group}_${c.plural}.yaml`, crdDir), 'utf8')).spec.versions[0].schema.openAPIV3Schema;
    assert.deepEqual(fromYaml, JSON.parse(JSON.stringify(schema)));
  }
});

test('structuralProblems catches the usual mistakes', () => {
  const bad: Schema = { type: 'object', properties: { a: { description: 'no type' }, b: { type: 'array' }, c: { type: 'string', properties: {} },
    d: { type: 'object', 'x-kubernetes-preserve-unknown-fields': true }, e: { type: 'string', maxitems: 3 } as Schema } };
  const problems = structuralProblems(bad, '', ['.d']);
  assert.deepEqual(problems, [
    '.a: no type', '.b: items must be set exactly on arrays', '.c: properties on a string', '.e: unknown keyword "maxitems"',
  ]);
  assert.deepEqual(structuralProblems({ type: 'object', 'x-kubernetes-preserve-unknown-fields': true }), ['<root>: x-kubernetes-preserve-unknown-fields where it is not meant']);
});

function schemaFor(o: Record<string, any>): Schema {
  const [group, version] = String(o.apiVersion).split('/');
  const c = MESH_CRDS.find((d) => d.group === group && d.kind === o.kind);
  assert.ok(c, `no CRD for ${o.apiVersion} ${o.kind}`);
  assert.ok(c.versions.includes(version), `${o.kind} ${version} is not served`);
  return (crdObject(c).spec as any).versions[0].schema.openAPIV3Schema;
}

for (const ex of VALID) {
  test(`accepted: ${ex.name}`, () => {
    assert.deepEqual(validateObject(schemaFor(ex.object), ex.object), []);
  });
}

for (const ex of INVALID) {
  test(`refused: ${ex.name} (${ex.field})`, () => {
    const refusals = validateObject(schemaFor(ex.object), ex.object);
    assert.ok(refusals.length > 0, 'accepted');
    assert.ok(refusals.some((r) => r.field === ex.field), `refusals name ${refusals.map((r) => r.field).join(', ')}, not ${ex.field}`);
  });
}

test('every manifest under controller/, daemonset/, cni/ parses; kustomizations list existing files', () => {
  const root = new URL('../../', import.meta.url);
  for (const dir of ['controller', 'daemonset', 'cni']) {
    const base = new URL(`${dir}/`, root);
    const files = readdirSync(base, { recursive: true, encoding: 'utf8' }).filter((f) => /\.ya?ml$/.test(f) && !f.startsWith('gateway-api/'));
    assert.ok(files.length > 0, `${dir}/ has manifests`);
    for (const f of files) {
      const docs = parseAllDocuments(readFileSync(new URL(f, base), 'utf8'));
      for (const d of docs) {
        assert.deepEqual(d.errors.map((e) => e.message), [], `${dir}/${f}`);
        const o = d.toJS();
        if (o === null) continue;
        assert.ok(typeof o.apiVersion === 'string' && typeof o.kind === 'string', `${dir}/${f}: apiVersion and kind`);
        if (o.kind === 'Kustomization') {
          const here = new URL(f.includes('/') ? f.slice(0, f.lastIndexOf('/') + 1) : './', base);
          for (const r of [...(o.resources ?? []), ...(o.patches ?? []).map((p: any) => p.path).filter(Boolean)]) {
            if (r === 'gateway-api') continue;   // fetched by scripts/fetch-gateway-api-crds.sh
            assert.ok(existsSync(new URL(r, here)), `${dir}/${f}: ${r} does not exist`);
          }
        }
      }
    }
  }
});
