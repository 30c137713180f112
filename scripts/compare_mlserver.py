"""The body of scripts/compare-mlserver.sh (run with the MLServer venv's python).

1. Fits a scikit-learn RandomForestRegressor with 100 trees of the depth of loyalscore's
   deepest forest, on 23 features (loyalscore's schema width), and writes an MLServer model.
2. Starts MLServer (scikit-learn runtime, default settings) and loyalscore-serve on free
   loopback ports and waits until both are ready.
3. Runs `loyalscore bench` against both: one customer per request, then batches of 1,000.
   loyalscore is measured on its own API and on KServe V2 (the protocol MLServer speaks).
4. Prints every figure and the ratios, then stops both servers.
"""
import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import joblib
import numpy as np
from sklearn.ensemble import RandomForestRegressor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
N_FEATURES = 23


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def deepest_forest(registry):
    """The larger max_depth of the production version's two forests."""
    out = subprocess.run(
        [os.path.join(BIN, "loyalscore"), "--registry", registry, "alias", "list", "--json"],
        check=True, capture_output=True, text=True).stdout
    version = next(a["version"] for a in json.loads(out) if a["alias"] == "production")
    shown = subprocess.run(
        [os.path.join(BIN, "loyalscore"), "--registry", registry, "models", "show", version],
        check=True, capture_output=True, text=True).stdout
    depths = [int(d) for d in re.findall(r"max_depth (\d+)", shown)]
    return version, max(depths) if depths else 16


def write_model(folder, depth):
    rng = np.random.default_rng(7)
    x = rng.random((60_000, N_FEATURES))
    y = np.sin(6 * x[:, 0]) + x[:, 1] * x[:, 2] + 0.3 * rng.standard_normal(len(x))
    rf = RandomForestRegressor(n_estimators=100, max_depth=depth, min_samples_leaf=20,
                               n_jobs=-1, random_state=7).fit(x, y)
    # Fitted on every core, served on one: joblib's pool would add milliseconds to each call.
    rf.set_params(n_jobs=None)
    joblib.dump(rf, os.path.join(folder, "model.joblib"))
    with open(os.path.join(folder, "model-settings.json"), "w") as f:
        json.dump({"name": "rf", "implementation": "mlserver_sklearn.SKLearnModel",
                   "parameters": {"uri": "./model.joblib"}}, f)
    return sum(e.tree_.node_count for e in rf.estimators_)


def wait(what, check, secs=120):
    deadline = time.time() + secs
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:
            pass
        time.sleep(0.5)
    sys.exit(f"{what} did not become ready in {secs} s")


def bench(addr, *args):
    out = subprocess.run(
        [os.path.join(BIN, "loyalscore"), "--json", "bench", "--server", f"http://{addr}",
         "--duration-secs", "10", *args],
        check=True, capture_output=True, text=True).stdout
    r = json.loads(out)
    if r["errors"]:
        sys.exit(f"bench {args} against {addr}: {r['errors']} errors")
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--registry", default="models")
    a = ap.parse_args()
    version, depth = deepest_forest(a.registry)
    procs = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            model_dir = os.path.join(tmp, "rf")
            os.makedirs(model_dir)
            nodes = write_model(model_dir, depth)
            ml_http, ml_grpc, ml_metrics = free_port(), free_port(), free_port()
            with open(os.path.join(model_dir, "..", "settings.json"), "w") as f:
                json.dump({"host": "127.0.0.1", "http_port": ml_http, "grpc_port": ml_grpc,
                           "metrics_port": ml_metrics}, f)
            log = open(os.path.join(tmp, "mlserver.log"), "w")
            procs.append(subprocess.Popen(
                [os.path.join(os.path.dirname(sys.executable), "mlserver"), "start", tmp],
                stdout=log, stderr=subprocess.STDOUT))
            ls_grpc = free_port()
            procs.append(subprocess.Popen(
                [os.path.join(BIN, "loyalscore-serve"), "--registry", a.registry,
                 "--listen", f"127.0.0.1:{ls_grpc}", "--metrics-listen", "off", "--log", "warn"]))
            wait("MLServer", lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{ml_http}/v2/models/rf/ready", timeout=2).status == 200)
            wait("loyalscore", lambda: bench(f"127.0.0.1:{ls_grpc}", "--mode", "health",
                                             "--requests", "1", "--warmup", "0"))
            ml, ls = f"127.0.0.1:{ml_grpc}", f"127.0.0.1:{ls_grpc}"
            one = ["--concurrency", "1", "--warmup", "50"]
            batch = ["--batch-size", "1000", "--concurrency", "2", "--channels", "2", "--warmup", "5"]
            runs = {
                "loyalscore Score, 1 customer": bench(ls, "--mode", "features", *one),
                "loyalscore V2 ModelInfer, 1 row": bench(ls, "--mode", "v2", "--batch-size", "1", *one),
                "MLServer V2 ModelInfer, 1 row": bench(ml, "--mode", "v2", "--model", "rf", "--batch-size", "1", *one),
                "loyalscore BatchScore, 1000": bench(ls, "--mode", "batch", *batch),
                "loyalscore V2 ModelInfer, 1000 rows": bench(ls, "--mode", "v2", *batch),
                "MLServer V2 ModelInfer, 1000 rows": bench(ml, "--mode", "v2", "--model", "rf", *batch),
            }
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
    print(f"loyalscore {version} (100 + 100 trees) against MLServer 1.7.1 + scikit-learn "
          f"(100 trees, max_depth {depth}, {nodes} nodes, {N_FEATURES} features); loopback, "
          f"same machine, 10 s a run")
    print(f"{'run':40} {'req/s':>9} {'rows/s':>10} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")
    for name, r in runs.items():
        print(f"{name:40} {r['requests_per_sec']:9.0f} {r['rows_per_sec']:10.0f} "
              f"{r['p50_us']:8d} {r['p99_us']:8d} {r['p999_us']:9d}")
    p50 = runs["MLServer V2 ModelInfer, 1 row"]["p50_us"]
    print(f"one customer, p50: MLServer / loyalscore Score = "
          f"{p50 / runs['loyalscore Score, 1 customer']['p50_us']:.1f}x, "
          f"/ loyalscore V2 = {p50 / runs['loyalscore V2 ModelInfer, 1 row']['p50_us']:.1f}x (target 50x)")
    rows = runs["MLServer V2 ModelInfer, 1000 rows"]["rows_per_sec"]
    print(f"batches of 1,000, rows/s: loyalscore BatchScore / MLServer = "
          f"{runs['loyalscore BatchScore, 1000']['rows_per_sec'] / rows:.1f}x, "
          f"loyalscore V2 / MLServer = {runs['loyalscore V2 ModelInfer, 1000 rows']['rows_per_sec'] / rows:.1f}x (target 10x)")


if __name__ == "__main__":
    main()
