"""loyalscore as a KServe V2 model, called with NVIDIA's tritonclient (the conformance test).

Run by tests/it/v2_conformance.rs against a real server:
    python scripts/kserve_v2_check.py --url 127.0.0.1:PORT --rows rows.json
rows.json holds feature rows (lists of 29 numbers in schema order). Prints one JSON object:
what each call answered, so the Rust test can compare the scores with BatchScore's.
"""

import argparse
import json

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


# README "Call it as a KServe V2 model" shows this function.
# --- snippet start ---
def score(url, rows, datatype="FP64"):
    client = grpcclient.InferenceServerClient(url=url)
    x = np.asarray(rows, dtype=np.float64 if datatype == "FP64" else np.float32)
    features = grpcclient.InferInput("features", list(x.shape), datatype)
    features.set_data_from_numpy(x)
    result = client.infer(
        "loyalscore",
        [features],
        outputs=[
            grpcclient.InferRequestedOutput("churn_probability"),
            grpcclient.InferRequestedOutput("clv"),
        ],
    )
    return result.as_numpy("churn_probability"), result.as_numpy("clv")
# --- snippet end ---


def infer(url, rows, datatype, **kwargs):
    client = grpcclient.InferenceServerClient(url=url)
    x = np.asarray(rows, dtype=np.float64 if datatype == "FP64" else np.float32)
    features = grpcclient.InferInput("features", list(x.shape), datatype)
    features.set_data_from_numpy(x)
    result = client.infer("loyalscore", [features], **kwargs)
    return {
        "churn_probability": result.as_numpy("churn_probability").tolist(),
        "clv": result.as_numpy("clv").tolist(),
        "model_version": result.get_response().model_version,
    }


def error_of(call):
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    return None


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True, help="host:port of loyalscore-serve")
    p.add_argument("--rows", required=True, help="JSON file of feature rows")
    a = p.parse_args()
    with open(a.rows) as f:
        rows = json.load(f)
    c = grpcclient.InferenceServerClient(url=a.url)
    churn, clv = score(a.url, rows[:1])
    out = {
        "live": c.is_server_live(),
        "ready": c.is_server_ready(),
        "model_ready": c.is_model_ready("loyalscore"),
        "server_metadata": c.get_server_metadata(as_json=True),
        "model_metadata": c.get_model_metadata("loyalscore", as_json=True),
        "snippet": {"churn_probability": churn.tolist(), "clv": clv.tolist()},
        "fp64_1": infer(a.url, rows[:1], "FP64"),
        "fp64_n": infer(a.url, rows, "FP64"),
        "fp32_1": infer(a.url, rows[:1], "FP32"),
        "fp32_n": infer(a.url, rows, "FP32"),
        "errors": {
            "ready_unknown_model": error_of(lambda: c.is_model_ready("foo")),
            "metadata_unknown_model": error_of(lambda: c.get_model_metadata("foo")),
            "infer_unknown_model": error_of(
                lambda: c.infer("foo", [_input(rows[:1], "FP64")])
            ),
            "infer_unknown_version": error_of(
                lambda: infer(a.url, rows[:1], "FP64", model_version="v404")
            ),
            "infer_wrong_width": error_of(
                lambda: infer(a.url, [r[:5] for r in rows[:2]], "FP64")
            ),
            "infer_int_datatype": error_of(
                lambda: c.infer("loyalscore", [_input(rows[:1], "INT32")])
            ),
        },
    }
    print(json.dumps(out))


def _input(rows, datatype):
    dtypes = {"FP64": np.float64, "FP32": np.float32, "INT32": np.int32}
    x = np.asarray(rows, dtype=dtypes[datatype])
    t = grpcclient.InferInput("features", list(x.shape), datatype)
    t.set_data_from_numpy(x)
    return t


if __name__ == "__main__":
    main()
