// Validates Kubernetes objects against the API's OpenAPI schemas, offline, with the npm
// packages kubernetes-models (core APIs) and @kubernetes-models/prometheus-operator
// (ServiceMonitor). Input: a JSON array of objects on stdin (the test renders the kustomize
// overlays and converts the YAML). Prints one line per object; exit status 1 if any object
// is invalid or of a kind no schema package knows.
'use strict';
const fs = require('fs');

const OPERATOR_GROUPS = new Set(['monitoring.coreos.com']);

function modelClass(apiVersion, kind) {
  const slash = apiVersion.indexOf('/');
  const group = slash < 0 ? '' : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  const base = OPERATOR_GROUPS.has(group)
    ? `@kubernetes-models/prometheus-operator/${group}/${version}`
    : `kubernetes-models/${group ? group + '/' : ''}${version}`;
  const mod = require(`${base}/${kind}`);
  return mod[kind];
}

const objects = JSON.parse(fs.readFileSync(0, 'utf8'));
let failed = 0;
for (const obj of objects) {
  const name = `${obj.apiVersion}/${obj.kind} ${obj.metadata && obj.metadata.name}`;
  let Model;
  try {
    Model = modelClass(obj.apiVersion, obj.kind);
  } catch (e) {
    console.log(`FAIL ${name}: no schema for this apiVersion/kind (${e.code || e.message})`);
    failed++;
    continue;
  }
  try {
    new Model(obj).validate();
    console.log(`ok   ${name}`);
  } catch (e) {
    console.log(`FAIL ${name}: ${e.message}`);
    failed++;
  }
}
console.log(`${objects.length - failed}/${objects.length} objects valid`);
process.exit(failed ? 1 : 0);
