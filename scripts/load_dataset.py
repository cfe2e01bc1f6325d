#!/usr/bin/env python3
"""Load a leaklab dataset (`leaklab export ... --out DATASET`) in Python.

    python3 scripts/load_dataset.py DATASET   # checks it, prints one line per run

Each run is a dict: `label` (label.json), `metrics` (the metrics.jsonl
lines) and `heaps` (the heap-NNN.pb.gz paths, in order; read them with
`go tool pprof` or any profile.proto reader). With the `jsonschema` module
installed, every label and metrics line is checked against the schemas the
dataset carries.
"""
import glob, gzip, json, os, sys

def load(dataset):
    schemas = {n: json.load(open(os.path.join(dataset, n + ".schema.json"))) for n in ("label", "metrics")}
    try:
        from jsonschema import validate
    except ImportError:
        validate = None
    for run in sorted(d for d in glob.glob(os.path.join(dataset, "*")) if os.path.isdir(d)):
        label = json.load(open(os.path.join(run, "label.json")))
        metrics = [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if line.strip()]
        if validate:
            validate(label, schemas["label"])
            for m in metrics:
                validate(m, schemas["metrics"])
        heaps = sorted(glob.glob(os.path.join(run, "heap-*.pb.gz")))
        assert len(heaps) == len(metrics), f"{run}: {len(heaps)} heaps, {len(metrics)} metrics lines"
        yield {"run": os.path.basename(run), "label": label, "metrics": metrics, "heaps": heaps}

if __name__ == "__main__":
    for r in load(sys.argv[1]):
        l = r["label"]
        onset = "-" if l["onset_at_s"] is None else f'{l["onset_at_s"]:.1f}s'
        kinds = "+".join(m["kind"] for m in l["mechanisms"]) or "none"
        print(f'{r["run"]}: {kinds}, onset {onset}, 1 in {l["leak_rate"]}, background {l["background"]}, {len(r["heaps"])} snapshots')
