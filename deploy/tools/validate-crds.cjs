// Validates custom resources against the schemas of the Argo CD and Prometheus Operator CRDs
// (compiled into @kubernetes-models/*), offline. Reads a JSON array of objects on stdin and
// prints a JSON array with one {kind, name, errors} per object; exits 1 when any is invalid
// or of a kind it has no schema for. Run with NODE_PATH pointing at the node_modules that
// scripts/setup installs (.tools/node_modules).
"use strict";

const { Application, AppProject } = require("@kubernetes-models/argo-cd/argoproj.io/v1alpha1");
const prometheus = require("@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1");

const MODELS = {
  "argoproj.io/v1alpha1/Application": Application,
  "argoproj.io/v1alpha1/AppProject": AppProject,
  "monitoring.coreos.com/v1/ServiceMonitor": prometheus.ServiceMonitor,
  "monitoring.coreos.com/v1/PodMonitor": prometheus.PodMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": prometheus.PrometheusRule,
};

function check(obj) {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const name = (obj.metadata && obj.metadata.name) || "";
  const Model = MODELS[key];
  if (Model === undefined) {
    return { kind: key, name, errors: [`no schema for ${key}`] };
  }
  try {
    new Model(obj).validate();
    return { kind: key, name, errors: [] };
  } catch (err) {
    const details = (err.details || []).map((d) => `${d.instancePath || "/"} ${d.message}`);
    return { kind: key, name, errors: details.length ? details : [String(err.message)] };
  }
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => {
  input += chunk;
});
process.stdin.on("end", () => {
  const results = JSON.parse(input).map(check);
  process.stdout.write(JSON.stringify(results) + "\n");
  process.exitCode = results.some((r) => r.errors.length) ? 1 : 0;
});
