#!/usr/bin/env python3
"""Writes a PyTorch `nn.Sequential` classifier as a Candela model version:
`model.safetensors` (its state_dict) and `model.json`, with every layer's
hyper-parameters read from the modules themselves (a norm's `eps`, GELU's
`approximate`, whether a linear layer has a bias), so nothing is copied by
hand. Use it from a notebook or a training script:

    import sys; sys.path.insert(0, "scripts")
    from torch_to_candela import write_model
    write_model(net, features=[...], labels=["legit", "fraud"], out="models/retail/2")

or export ONNX instead (`torch.onnx.export`, `"format": "onnx"`), which
needs no helper. Needs `torch` and `safetensors`. The network must end in
`nn.Softmax` (one output per label) or `nn.Sigmoid` (one output, two labels).
"""
import hashlib
import json
import pathlib


def layer_spec(index, module):
    """The model.json layer for one module of the Sequential."""
    from torch import nn

    if isinstance(module, nn.Linear):
        return {"type": "linear", "bias": module.bias is not None}
    if isinstance(module, nn.ReLU):
        return {"type": "relu"}
    if isinstance(module, nn.GELU):
        return {"type": "gelu", "approximate": module.approximate}
    if isinstance(module, nn.Tanh):
        return {"type": "tanh"}
    if isinstance(module, nn.Sigmoid):
        return {"type": "sigmoid"}
    if isinstance(module, nn.Softmax):
        if module.dim not in (-1, 1):
            raise ValueError(f"layer {index}: nn.Softmax(dim={module.dim}) must be over the classes (dim=1 or -1)")
        return {"type": "softmax"}
    if isinstance(module, nn.LayerNorm):
        if len(module.normalized_shape) != 1:
            raise ValueError(f"layer {index}: nn.LayerNorm over {module.normalized_shape}; Candela normalises the features (1-D)")
        return {"type": "layer_norm", "eps": module.eps}
    if isinstance(module, nn.BatchNorm1d):
        if not module.track_running_stats:
            raise ValueError(f"layer {index}: nn.BatchNorm1d without running statistics cannot run in inference mode")
        return {"type": "batch_norm", "eps": module.eps}
    if isinstance(module, nn.Dropout):
        return {"type": "dropout", "p": module.p}
    buffers = dict(module.named_buffers(recurse=False))
    if set(buffers) == {"mean", "std"} and not list(module.parameters()):
        return {"type": "standardize"}
    raise ValueError(
        f"layer {index} is {type(module).__name__}, which Candela has no layer for: use Linear, ReLU, GELU, Tanh, "
        "Sigmoid, Softmax, LayerNorm, BatchNorm1d, Dropout, or a module with `mean` and `std` buffers "
        "(standardisation); or export ONNX"
    )


def write_model(net, features, labels, out, prefix="", created="", training_data="", metrics=None):
    """Writes `net` (an nn.Sequential, or the model whose attribute `prefix`
    without its dot is one) into the version directory `out`."""
    from safetensors.torch import save_file

    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sequential = net if not prefix else getattr(net, prefix.rstrip("."))
    layers = [layer_spec(i, m) for i, m in enumerate(sequential)]
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in net.state_dict().items()
             if not name.endswith("num_batches_tracked")}
    save_file(state, str(out / "model.safetensors"))
    digest = hashlib.sha256((out / "model.safetensors").read_bytes()).hexdigest()
    manifest = {
        "features": list(features),
        "labels": list(labels),
        "tensor_prefix": prefix,
        "layers": layers,
        "provenance": {"created": created, "training_data": training_data, "metrics": metrics or {},
                       "notes": "written by scripts/torch_to_candela.py"},
        "files": {"model.safetensors": digest},
    }
    if not prefix:
        del manifest["tensor_prefix"]
    # model.json last: a live repository serves the version once it and the weights match.
    (out / "model.json.tmp").write_text(json.dumps(manifest, indent=2) + "\n")
    (out / "model.json.tmp").rename(out / "model.json")
    return manifest
