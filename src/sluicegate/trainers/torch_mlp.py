"""PyTorch tabular MLP estimators (`model.kind: torch`, registered in `mlp`): early stopping, LR schedules,
resumable checkpoints, CUDA + AMP."""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.preprocessing import LabelEncoder

# torch is imported inside functions only, and only by this module (its classes are what stored
# models unpickle to); the trainer registry reaches it at fit time through `mlp`.

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "torch_mlp.ckpt"
PREDICT_CHUNK = 65536


def _torch():
    import torch

    return torch


def export_network_onnx(est: "_TorchMLPBase", opset: int) -> bytes:
    """The fitted MLP's network alone as ONNX bytes (input `x`, output `logits`, dynamic batch).

    The TorchScript exporter (`dynamo=False`) needs no onnxscript. Used by `sluicegate.onnx_export`,
    which splices it after the feature steps; torch stays owned by this module.
    """
    import copy
    import io

    torch = _torch()
    net = copy.deepcopy(est.module_).cpu().eval()
    buf = io.BytesIO()
    dummy = torch.zeros((2, int(est.n_features_in_)), dtype=torch.float32)
    with torch.no_grad():
        torch.onnx.export(net, (dummy,), buf, input_names=["x"], output_names=["logits"], opset_version=opset,
                          dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}}, dynamo=False)
    return buf.getvalue()



@functools.cache
def cuda_available() -> bool:
    """Whether a CUDA device is usable (also asked by other trainers); torch asks the driver only when a device node exists."""
    if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/proc/driver/nvidia/version")):
        return False  # no driver: skip importing torch (seconds)
    try:
        return bool(_torch().cuda.is_available())
    except Exception:
        return False


def resolve_device(device: str) -> str:
    """`auto` is CUDA when torch sees a GPU, else CPU; `cuda` without a GPU is an error."""
    torch = _torch()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no CUDA device (use device: auto or cpu)")
    return device


def _activation(name: str):
    nn = _torch().nn
    return {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}[name]()


def build_network(n_in: int, n_out: int, hidden_layers, activation: str, dropout: float, norm: str):
    """Linear -> [norm] -> activation -> [dropout] per hidden layer, then a linear head."""
    nn = _torch().nn
    layers: list = []
    width = n_in
    for h in hidden_layers:
        layers.append(nn.Linear(width, int(h)))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(int(h)))
        elif norm == "layer":
            layers.append(nn.LayerNorm(int(h)))
        layers.append(_activation(activation))
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = int(h)
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _TorchMLPBase(BaseEstimator):
    """Shared fit/predict of the classifier and the regressor; weights pickle as a state_dict."""

    def __init__(
        self,
        hidden_layers=(64, 32),
        activation="relu",
        dropout=0.1,
        norm="none",
        epochs=50,
        batch_size=128,
        lr=1e-3,
        weight_decay=0.0,
        scheduler="none",
        patience=10,
        device="auto",
        num_threads=2,
        seed=0,
    ):
        self.hidden_layers = hidden_layers
        self.activation = activation
        self.dropout = dropout
        self.norm = norm
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.scheduler = scheduler
        self.patience = patience
        self.device = device
        self.num_threads = num_threads
        self.seed = seed

    # ------------------------------------------------------------ task-specific pieces
    def _encode_targets(self, y: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _loss(self):
        raise NotImplementedError

    def _target_tensor(self, y: np.ndarray, device):
        raise NotImplementedError

    # ------------------------------------------------------------ fit
    def fit(self, X, y, X_valid=None, y_valid=None, report=None, checkpoint_dir=None):
        """Train with early stopping on (X_valid, y_valid) when given, else on the training loss.

        Args:
            X, y: training features (numeric) and targets.
            X_valid, y_valid: the validation split, for early stopping, the plateau schedule and `report`.
            report: `report(epoch, validation_loss)` after each epoch; it may raise to stop (pruning).
            checkpoint_dir: where a checkpoint is written after each epoch; a fit with the same
                data and parameters that finds one resumes after its last finished epoch.

        Returns:
            self, with the weights of the epoch with the best validation loss.
        """
        torch = _torch()
        device = torch.device(resolve_device(self.device))
        on_gpu = device.type == "cuda"
        self._setup(torch, on_gpu)

        X = np.ascontiguousarray(X, dtype=np.float32)
        y_enc = self._encode_targets(np.asarray(y))
        has_valid = X_valid is not None and y_valid is not None and len(y_valid) > 0
        self.n_features_in_ = X.shape[1]

        torch.manual_seed(int(self.seed))  # weight init and dropout
        net = build_network(self.n_features_in_, self.n_outputs_, self.hidden_layers, self.activation,
                            self.dropout, self.norm).to(device)
        opt = torch.optim.AdamW(net.parameters(), lr=float(self.lr), weight_decay=float(self.weight_decay))
        sched = self._scheduler(torch, opt)
        loss_fn = self._loss()
        gen = torch.Generator(device=device)
        gen.manual_seed(int(self.seed))  # batch order

        # The data goes to the device once; batches are indexed there (no per-batch host copies).
        Xt = torch.from_numpy(X).to(device)
        yt = self._target_tensor(y_enc, device)
        Xv = yv = None
        if has_valid:
            Xv = torch.from_numpy(np.ascontiguousarray(X_valid, dtype=np.float32)).to(device)
            yv = self._target_tensor(self._transform_targets(np.asarray(y_valid)), device)

        start, best, best_state, bad, history = 0, math.inf, None, 0, []
        ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir else None
        signature = self._signature(X, y_enc, X_valid, y_valid) if ckpt else None
        if ckpt is not None and ckpt.exists():
            state = torch.load(ckpt, map_location=device, weights_only=True)
            if state.get("signature") == signature:
                net.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                if sched is not None:
                    sched.load_state_dict(state["scheduler"])
                gen.set_state(state["generator"].cpu())
                torch.set_rng_state(state["rng_cpu"].cpu())
                if on_gpu and state.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state(state["rng_cuda"].cpu())
                start, best, bad, history = state["epoch"], state["best"], state["bad"], list(state["history"])
                best_state = state["best_model"]
                log.info("torch MLP: resuming from %s after epoch %d", ckpt, start)
            else:
                log.info("torch MLP: ignoring checkpoint %s made for other data or parameters", ckpt)

        use_amp = on_gpu
        # bfloat16 needs no loss scaling; float16 (older GPUs) does. CPU runs in float32.
        amp_dtype = torch.bfloat16 if not on_gpu or torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
        n, bs = len(Xt), max(1, int(self.batch_size))
        for epoch in range(start, int(self.epochs)):
            if self.patience and bad >= int(self.patience):
                break
            net.train()
            perm = torch.randperm(n, device=device, generator=gen)
            total = torch.zeros((), device=device)
            for i in range(0, n, bs):
                idx = perm[i:i + bs]
                if self.norm == "batch" and len(idx) < 2:
                    continue  # batch norm cannot train on one row
                with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                    loss = loss_fn(net(Xt[idx]), yt[idx])
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                total += loss.detach().float() * len(idx)
            train_loss = float((total / n).item())  # one device sync per epoch
            val_loss = self._eval_loss(torch, net, loss_fn, Xv, yv) if has_valid else train_loss
            if not math.isfinite(val_loss):
                raise FloatingPointError(f"the loss diverged at epoch {epoch} (got {val_loss}); lower lr")
            if self.scheduler == "plateau":
                sched.step(val_loss)
            elif sched is not None:
                sched.step()
            if val_loss < best:
                best, bad = val_loss, 0
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            else:
                bad += 1
            history.append(val_loss)
            if ckpt is not None:
                self._save_checkpoint(torch, ckpt, signature, epoch + 1, net, opt, sched, gen, on_gpu,
                                      best, best_state, bad, history)
            if report is not None:
                report(epoch, val_loss)
        if best_state is not None:
            net.load_state_dict(best_state)
        net.eval()
        self.module_ = net
        self.device_ = str(device)
        self.history_ = history
        self.n_epochs_ = len(history)
        self.best_loss_ = best
        return self

    def _setup(self, torch, on_gpu: bool) -> None:
        torch.set_num_threads(max(1, int(self.num_threads)))
        if not on_gpu and not torch.are_deterministic_algorithms_enabled():
            # Deterministic kernels on CPU (on GPU they need CUBLAS_WORKSPACE_CONFIG and cost speed).
            torch.use_deterministic_algorithms(True, warn_only=True)

    def _scheduler(self, torch, opt):
        sch = torch.optim.lr_scheduler
        epochs = max(1, int(self.epochs))
        if self.scheduler == "cosine":
            return sch.CosineAnnealingLR(opt, T_max=epochs)
        if self.scheduler == "step":
            return sch.StepLR(opt, step_size=max(1, epochs // 3), gamma=0.1)
        if self.scheduler == "plateau":
            return sch.ReduceLROnPlateau(opt, factor=0.5, patience=max(1, int(self.patience or 10) // 2))
        return None

    def _eval_loss(self, torch, net, loss_fn, Xv, yv) -> float:
        net.eval()
        with torch.no_grad():
            total = torch.zeros((), device=Xv.device)
            for i in range(0, len(Xv), PREDICT_CHUNK):
                xb, yb = Xv[i:i + PREDICT_CHUNK], yv[i:i + PREDICT_CHUNK]
                total += loss_fn(net(xb), yb).float() * len(xb)
            return float((total / len(Xv)).item())

    def _signature(self, X, y, X_valid, y_valid) -> str:
        """What a checkpoint must match to be resumed: parameters, data and library versions."""
        h = hashlib.sha256(repr(sorted(self.get_params().items())).encode())
        for arr in (X, y, X_valid, y_valid):
            if arr is not None:
                a = np.ascontiguousarray(arr)
                h.update(str((a.shape, a.dtype)).encode())
                h.update(a.tobytes())
        h.update(_torch().__version__.encode())
        return h.hexdigest()

    def _save_checkpoint(self, torch, path: Path, signature, epoch, net, opt, sched, gen, on_gpu,
                         best, best_state, bad, history) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "signature": signature, "epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict() if sched is not None else None, "generator": gen.get_state(),
            "rng_cpu": torch.get_rng_state(), "rng_cuda": torch.cuda.get_rng_state() if on_gpu else None,
            "best": best, "best_model": best_state, "bad": bad, "history": list(history),
        }
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint

    # ------------------------------------------------------------ inference
    def _forward(self, X) -> np.ndarray:
        torch = _torch()
        if not hasattr(self, "module_"):
            raise AttributeError(f"{type(self).__name__} is not fitted yet; call fit first")
        X = np.ascontiguousarray(X, dtype=np.float32)
        device = next(self.module_.parameters()).device
        outs = []
        with torch.no_grad():
            for i in range(0, len(X), PREDICT_CHUNK):
                outs.append(self.module_(torch.from_numpy(X[i:i + PREDICT_CHUNK]).to(device)).float().cpu())
        if not outs:
            return np.zeros((0, self.n_outputs_), dtype=np.float32)
        return torch.cat(outs).numpy()

    # ------------------------------------------------------------ pickling: weights as a state_dict
    def __getstate__(self):
        state = dict(super().__getstate__())  # object.__getstate__ returns __dict__ itself, not a copy
        module = state.pop("module_", None)
        if module is not None:
            torch = _torch()
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in module.state_dict().items()}, buf)
            state["weights_"] = buf.getvalue()
            state["device_"] = "cpu"
        return state

    def __setstate__(self, state):
        state = dict(state)
        weights = state.pop("weights_", None)
        super().__setstate__(state)
        if weights is not None:
            torch = _torch()
            net = build_network(self.n_features_in_, self.n_outputs_, self.hidden_layers, self.activation,
                                self.dropout, self.norm)
            net.load_state_dict(torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True))
            net.eval()
            self.module_ = net


class TorchMLPClassifier(ClassifierMixin, _TorchMLPBase):
    """MLP classifier: one logit and BCE for two classes, softmax and cross-entropy for more."""

    def _encode_targets(self, y):
        self.encoder_ = LabelEncoder().fit(y)
        self.classes_ = self.encoder_.classes_
        if len(self.classes_) < 2:
            raise ValueError(f"classification needs at least two classes in y (got {list(self.classes_)})")
        self.n_outputs_ = 1 if len(self.classes_) == 2 else len(self.classes_)
        return self.encoder_.transform(y)

    def _transform_targets(self, y):
        return self.encoder_.transform(y)

    def _loss(self):
        nn = _torch().nn
        return nn.BCEWithLogitsLoss() if self.n_outputs_ == 1 else nn.CrossEntropyLoss()

    def _target_tensor(self, y, device):
        torch = _torch()
        if self.n_outputs_ == 1:
            return torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(-1, 1)).to(device)
        return torch.from_numpy(np.asarray(y, dtype=np.int64)).to(device)

    def predict_proba(self, X):
        logits = self._forward(X)
        if self.n_outputs_ == 1:
            p = 1.0 / (1.0 + np.exp(-logits[:, 0].astype(np.float64)))
            return np.column_stack([1.0 - p, p])
        z = logits.astype(np.float64)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X):
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]


class TorchMLPRegressor(RegressorMixin, _TorchMLPBase):
    """MLP regressor on a standardised target, mean squared error."""

    def _encode_targets(self, y):
        y = np.asarray(y, dtype=np.float64)
        self.y_mean_ = float(y.mean())
        self.y_std_ = float(y.std()) or 1.0
        self.n_outputs_ = 1
        return self._transform_targets(y)

    def _transform_targets(self, y):
        return (np.asarray(y, dtype=np.float64) - self.y_mean_) / self.y_std_

    def _loss(self):
        return _torch().nn.MSELoss()

    def _target_tensor(self, y, device):
        torch = _torch()
        return torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(-1, 1)).to(device)

    def predict(self, X):
        return self._forward(X)[:, 0].astype(np.float64) * self.y_std_ + self.y_mean_


# ---------------------------------------------------------------- trainer
def estimator_for(spec: Any, task: str, seed: int) -> _TorchMLPBase:
    cls = TorchMLPClassifier if task == "classification" else TorchMLPRegressor
    return cls(
        hidden_layers=tuple(spec.hidden_layers), activation=spec.activation, dropout=spec.dropout, norm=spec.norm,
        epochs=spec.epochs, batch_size=spec.batch_size, lr=spec.lr, weight_decay=spec.weight_decay,
        scheduler=spec.scheduler, patience=spec.patience, device=spec.device, num_threads=spec.num_threads,
        seed=seed,
    )
