#!/usr/bin/env python3
"""Writes a PyTorch classifier or regressor as a Candela model version:
`model.safetensors` and `model.json`, with every layer's hyper-parameters
read from the modules themselves (a norm's `eps`, GELU's `approximate`,
whether a linear layer has a bias), so nothing is copied by hand. The
network is what people write: an `nn.Sequential` (blocks nested in it
included), or a module whose `forward` applies its layers one after the
other, modules or functions alike (`self.fc(x)`, `F.relu(x)`,
`torch.softmax(x, dim=1)`); it is traced (torch.fx) and flattened into
Candela's layer list, each layer's tensors renamed to its place in it. A
forward that is not one chain (a residual sum, a concatenation) is refused
naming the step. Use it from a notebook or a training script:

    import sys; sys.path.insert(0, "scripts")
    from torch_to_candela import write_model
    write_model(net, features=[...], labels=["legit", "fraud"], out="models/retail/2")

or export ONNX instead (`torch.onnx.export`, `"format": "onnx"`), which
needs no helper. Needs `torch` and `safetensors`. The network must end in
`Softmax` (one output per label) or `Sigmoid` (one output, two labels).
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


def traced_layers(net):
    """The layers `net` applies, in order: (model.json layer, module or None).
    Modules Candela has a layer for are leaves of the trace; functions and
    tensor methods map to the activation layers they are."""
    import torch
    import torch.nn.functional as F
    from torch import fx

    class Tracer(fx.Tracer):
        def is_leaf_module(self, module, name):
            try:
                layer_spec(name, module)
                return True
            except ValueError:
                return super().is_leaf_module(module, name)

    graph = Tracer().trace(net)
    functions = {torch.relu: "relu", F.relu: "relu", torch.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
                 F.tanh: "tanh", F.gelu: "gelu", torch.softmax: "softmax", F.softmax: "softmax", F.dropout: "dropout"}
    methods = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax"}
    layers, previous = [], None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                raise ValueError(f"`{node.name}`: the network takes more than one input; Candela sends one row of features")
            previous = node
            continue
        if node.op == "get_attr" and not node.users:
            continue  # read while deciding what is a leaf (a linear layer's bias), used by nothing
        if node.op == "output":
            if node.args[0] is not previous:
                raise ValueError("the network's output is not its last step")
            break
        inputs = [a for a in node.args if isinstance(a, fx.Node)] + [a for a in node.kwargs.values() if isinstance(a, fx.Node)]
        if inputs != [previous]:
            raise ValueError(f"step `{node.name}` ({node.target}) does not take the previous step's output alone "
                             "(a residual sum, a concatenation): Candela runs one chain of layers; export ONNX instead")
        if node.op == "call_module":
            module = net.get_submodule(node.target)
            layers.append((layer_spec(node.target, module), module))
        elif node.op in ("call_function", "call_method"):
            kind = functions.get(node.target) if node.op == "call_function" else methods.get(node.target)
            if kind is None:
                raise ValueError(f"step `{node.name}` calls {node.target}, which Candela has no layer for")
            options = dict(node.kwargs)
            if kind == "softmax":
                dim = options.get("dim", node.args[1] if len(node.args) > 1 else None)
                if dim not in (-1, 1):
                    raise ValueError(f"step `{node.name}`: softmax over dim={dim} must be over the classes (dim=1 or -1)")
                layers.append(({"type": "softmax"}, None))
            elif kind == "gelu":
                layers.append(({"type": "gelu", "approximate": options.get("approximate", "none")}, None))
            elif kind == "dropout":
                layers.append(({"type": "dropout", "p": options.get("p", 0.5)}, None))
            else:
                layers.append(({"type": kind}, None))
        else:
            raise ValueError(f"step `{node.name}` ({node.op} {node.target}) is not a layer Candela has")
        previous = node
    return layers


def write_model(net, features, labels, out, prefix="", created="", training_data="", metrics=None):
    """Writes `net` into the version directory `out`: traced and flattened
    (see above), or, with `prefix`, the `nn.Sequential` that is `net`'s
    attribute `prefix` without its dot, its tensors under their own names.
    `created` (RFC 3339) defaults to now, so the server reports the model's
    age. Returns the manifest."""
    from datetime import datetime, timezone

    from safetensors.torch import save_file

    created = created or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if prefix:
        sequential = getattr(net, prefix.rstrip("."))
        layers = [layer_spec(i, m) for i, m in enumerate(sequential)]
        state = dict(net.state_dict())
    else:
        traced = traced_layers(net)
        layers = [layer for layer, _ in traced]
        state = {f"{index}.{name}": tensor for index, (_, module) in enumerate(traced) if module is not None
                 for name, tensor in module.state_dict().items()}
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in state.items()
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
